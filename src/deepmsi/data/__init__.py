"""The only package that touches files and codecs: dataset readers, media decoding, caches.

``load_dataset("meld:DIR" | "iemocap:PATH" | "folder:DIR")`` gives a ``Dataset``: one
``Utterance`` record per labelled utterance. Media decoding lives in ``deepmsi.data.media``
(imported on use, since it pulls in PyAV and OpenCV).
"""

from deepmsi.data.records import Dataset, Utterance
from deepmsi.data.spec import DatasetSpec, load_dataset, parse_spec

__all__ = ["Dataset", "DatasetSpec", "Utterance", "load_dataset", "parse_spec"]
