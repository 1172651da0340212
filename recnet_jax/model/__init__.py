"""RECNet model parts (Flax NNX, NHWC)."""

from recnet_jax.model.recnet import (ExposureMaskPredictor, RECNet, RECNetOutput, Refine,
                                     RegionAwareBlock)
from recnet_jax.model.mru import MixedScaleRestoration
from recnet_jax.model.rdm import RegionAwareDeExposure

__all__ = ["RECNet", "RECNetOutput", "ExposureMaskPredictor", "RegionAwareBlock",
           "RegionAwareDeExposure", "MixedScaleRestoration", "Refine"]
