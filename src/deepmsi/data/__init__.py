"""The only package that touches files and codecs: dataset readers, media decoding, caches."""
