"""The DeepMSI-MER architecture (pure torch; never touches files)."""

from deepmsi.models.deepmsi import DeepMSI, DeepMSIOutput
from deepmsi.models.swin_v2 import SwinV2, set_precision

__all__ = ["DeepMSI", "DeepMSIOutput", "SwinV2", "set_precision"]
