"""The DeepMSI-MER architecture (pure torch; never touches files)."""

from deepmsi.models.deepmsi import DeepMSI, DeepMSIOutput

__all__ = ["DeepMSI", "DeepMSIOutput"]
