"""Generic neural-network blocks, independent of the DeepMSI architecture."""

from deepmsi.nn.autocast import autocast, float32_region
from deepmsi.nn.drop_path import DropPath
from deepmsi.nn.feature_norm import FeatureNorm
from deepmsi.nn.mlp import BatchNorm1d, Mlp, MlpHead, ProjectionHead
from deepmsi.nn.window import fit_window, shifted_window_mask, window_partition, window_reverse

__all__ = [
    "autocast",
    "BatchNorm1d",
    "DropPath",
    "FeatureNorm",
    "Mlp",
    "MlpHead",
    "ProjectionHead",
    "fit_window",
    "float32_region",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]
