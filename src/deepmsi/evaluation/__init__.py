"""Evaluation: scoring a run on a split (:mod:`.scoring`, :mod:`.report`, :mod:`.labelmap`) and
the experiments built from training and scoring (:mod:`.protocols`, :mod:`.ablation`)."""
