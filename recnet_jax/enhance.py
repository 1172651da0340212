"""Enhance photos with a RECNet: uint8 RGB in, uint8 RGB out, any size.

    out = recnet_jax.enhance.enhance_image(model, photo)   # [H, W, 3] uint8 -> [H, W, 3] uint8

The model runs on the full image (no tiling), as the release's test code does. Each distinct image
size compiles once (jit), so batch jobs of same-sized photos pay the compile only once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@functools.lru_cache(maxsize=8)
def _apply_fn(graphdef):
    @jax.jit
    def apply(state, images):
        out = nnx.merge(graphdef, state)(images)
        return out.image, out.mask
    return apply


def enhance_image(model, photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corrects one photo.

    Args:
      model: a :class:`recnet_jax.RECNet`.
      photo: [H, W, 3] uint8 RGB.
    Returns:
      (image, mask): image [H, W, 3] uint8 (rounded half to even, as the release quantises),
      mask [H, W] float32 in (0, 1), the predicted under-exposure map.
    """
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[-1] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB photo, got {photo.shape} {photo.dtype}")
    graphdef, state = nnx.split(model)
    image, mask = _apply_fn(graphdef)(state, jnp.asarray(photo[None], jnp.float32) / 255.0)
    image = np.round(np.clip(np.asarray(image[0]), 0.0, 1.0) * 255.0).astype(np.uint8)
    return image, np.asarray(mask[0, ..., 0])
