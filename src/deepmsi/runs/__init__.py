"""A trained run: the folder training writes (:mod:`.folder`) and how its models are applied to
features (:mod:`.predict`). Written by ``training/``, read by ``evaluation/`` and ``inference/``."""
