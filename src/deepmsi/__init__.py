"""deepmsi: multimodal emotion recognition (DeepMSI-MER) from raw media to predictions."""

__version__ = "0.1.0"
