"""The evaluation metrics of the release's protocol (reference section 9), through dm_pix.

Both images are clamped to [0, 1], scaled by 255, rounded half to even and cast to uint8 (the
float target is re-quantised too); PSNR and SSIM are then ``dm_pix.psnr`` / ``dm_pix.ssim`` (11x11
Gaussian, sigma 1.5, 'valid', mean over the map and the three channels) on ``x / 255``. An image
whose PSNR or SSIM is inf or NaN scores 0 for both, as the release scores it.

    m = metrics.image_metrics(output.image, target)      # {'psnr': [B], 'ssim': [B]}, jittable
    m = metrics.image_metrics(out_u8, tgt_u8)            # uint8 images are used as they are

Used by the trainer's validation, by ``make demo`` and by ``recnet_jax.evaluate``.
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np


def quantize(x) -> jax.Array:
    """[..., H, W, 3] float in [0, 1] -> uint8 (clamp, x255, round half to even); uint8 passes."""
    x = jnp.asarray(x)
    if x.dtype == jnp.uint8:
        return x
    return jnp.round(jnp.clip(x.astype(jnp.float32), 0.0, 1.0) * 255.0).astype(jnp.uint8)


def to_uint8(x) -> np.ndarray:
    """:func:`quantize` on the host: a numpy uint8 array (for writing images)."""
    return np.asarray(quantize(x))


def image_metrics(output, target) -> dict[str, jax.Array]:
    """PSNR (dB) and SSIM per image, with the release's protocol.

    Args:
      output, target: [B, H, W, 3] (or [H, W, 3]) float in [0, 1], or uint8; H, W >= 11.
    Returns:
      {'psnr': [B], 'ssim': [B]} float32 (scalars for unbatched input); an image whose PSNR or SSIM
      is not finite (identical images give PSNR inf) scores 0 for both.
    """
    a = quantize(output).astype(jnp.float32) / 255.0
    b = quantize(target).astype(jnp.float32) / 255.0
    if a.shape != b.shape or a.shape[-1] != 3 or a.ndim not in (3, 4):
        raise ValueError(f"image_metrics expects two [B, H, W, 3] (or [H, W, 3]) images of one shape, "
                         f"got {a.shape} and {b.shape}")
    if min(a.shape[-3:-1]) < 11:
        raise ValueError(f"image_metrics needs images of at least 11 x 11 pixels (the SSIM window), "
                         f"got {a.shape[-3:-1]}")
    psnr = pix.psnr(a, b)
    ssim = pix.ssim(a, b)
    ok = jnp.isfinite(psnr) & jnp.isfinite(ssim)
    return {"psnr": jnp.where(ok, psnr, 0.0), "ssim": jnp.where(ok, ssim, 0.0)}
