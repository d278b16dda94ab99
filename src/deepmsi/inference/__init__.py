"""Inference on a user's media: :class:`.predictor.Predictor`, its results (:mod:`.results`), the
timeline plot (:mod:`.timeline`) and ONNX export (:mod:`.export`)."""
