"""Pixel-level terms of the RECNet training objective (reference §7.1-7.5), as the release computes them.

All images are NHWC float arrays in [0, 1]: ``[B, H, W, 3]``; masks are ``[B, H, W, 1]``. Every function
is pure and jittable, and returns a float32 scalar (a mean over the whole batch) unless stated otherwise.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# SSIM constants of the release (data range 1).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2

# BT.601 luma weights used for the mask target.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# torch.nn.BCELoss clamps each log at this value.
BCE_LOG_CLAMP = -100.0

# torch.nn.CosineSimilarity(dim=1) default eps.
COSINE_EPS = 1e-8

_HIGHEST = lax.Precision.HIGHEST


def gaussian_window_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """The release's 1-D Gaussian taps, normalised the PyTorch way (reference §11.8).

    The taps are computed in float64, stored as float32, and divided in float32 by the correctly rounded
    float32 sum of the float32 taps (what ``torch.Tensor.sum`` returns). numpy's float32 pairwise sum
    differs in the last bit and moves the SSIM term by ~1.5e-5 relative.

    Returns:
      float32 array ``[size]``, summing to 1 within float32 rounding.
    """
    taps = np.array(
        [math.exp(-((n - size // 2) ** 2) / (2.0 * sigma**2)) for n in range(size)], dtype=np.float32
    )
    total = np.float32(np.sum(taps.astype(np.float64)))
    return taps / total


def l1_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error over all elements.

    Args:
      pred: ``[B, H, W, C]``.
      target: ``[B, H, W, C]``.
    Returns:
      scalar.
    """
    return jnp.mean(jnp.abs(pred - target))


def ssim_map(
    x: jax.Array,
    y: jax.Array,
    *,
    window_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    taps: np.ndarray | None = None,
) -> jax.Array:
    """Per-pixel, per-channel SSIM with zero-padded 'same' Gaussian windows (the release's training SSIM).

    The Gaussian window is applied depth-wise per channel, with zero padding ``window_size // 2``, so the
    map has the input's size and windows at the border include zeros. The separable form (a column pass,
    then a row pass) of the 2-D window ``outer(g, g)`` is used, always at HIGHEST precision: the variances
    ``E[x^2] - mu^2`` cancel, so reduced-precision convolutions (TF32/bf16 passes) would ruin the term.

    Args:
      x: ``[B, H, W, C]``.
      y: ``[B, H, W, C]``.
      window_size: odd window width (11 in the release).
      sigma: Gaussian standard deviation (1.5 in the release).
      taps: optional 1-D window (odd length) replacing :func:`gaussian_window_1d` ``(window_size, sigma)``.
    Returns:
      ``[B, H, W, C]`` SSIM map, float32 (float64 for float64 inputs with x64 enabled). In float32 single
      pixels carry ~1e-4 absolute rounding error (the variance cancels), which averages out in the mean.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim_map expects two NHWC arrays of equal shape, got {x.shape} and {y.shape}")
    dtype = jnp.promote_types(jnp.promote_types(x.dtype, y.dtype), jnp.float32)
    x = x.astype(dtype)
    y = y.astype(dtype)
    c = x.shape[-1]
    stacked = jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1)  # [B, H, W, 5C]
    n = stacked.shape[-1]
    if taps is None:
        taps = gaussian_window_1d(window_size, sigma)
    taps = np.asarray(taps)
    if taps.ndim != 1 or taps.shape[0] % 2 != 1:
        raise ValueError(f"ssim_map taps must be a 1-D window of odd length, got shape {taps.shape}")
    window_size = taps.shape[0]
    g = jnp.asarray(taps, dtype)
    pad = window_size // 2
    dn = ("NHWC", "HWIO", "NHWC")
    k_col = jnp.broadcast_to(g[:, None, None, None], (window_size, 1, 1, n))
    k_row = jnp.broadcast_to(g[None, :, None, None], (1, window_size, 1, n))
    f = lax.conv_general_dilated(
        stacked,
        k_col,
        (1, 1),
        ((pad, pad), (0, 0)),
        dimension_numbers=dn,
        feature_group_count=n,
        precision=_HIGHEST,
    )
    f = lax.conv_general_dilated(
        f,
        k_row,
        (1, 1),
        ((0, 0), (pad, pad)),
        dimension_numbers=dn,
        feature_group_count=n,
        precision=_HIGHEST,
    )
    mu_x, mu_y, e_xx, e_yy, e_xy = (f[..., i * c : (i + 1) * c] for i in range(5))
    mu_xx = mu_x * mu_x
    mu_yy = mu_y * mu_y
    mu_xy = mu_x * mu_y
    var_x = e_xx - mu_xx
    var_y = e_yy - mu_yy
    cov = e_xy - mu_xy
    num = (2.0 * mu_xy + SSIM_C1) * (2.0 * cov + SSIM_C2)
    den = (mu_xx + mu_yy + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return num / den


def ssim_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """The release's SSIM term: **minus** the mean of :func:`ssim_map` over ``B, H, W, C``.

    Args:
      pred: ``[B, H, W, C]``.
      target: ``[B, H, W, C]``.
    Returns:
      scalar in [-1, 1]; -1 for identical images. Its weight (0.1) multiplies this negative number.
    """
    return -jnp.mean(ssim_map(pred, target))


def _safe_norm(v: jax.Array, eps: float) -> jax.Array:
    """``max(||v||_2, eps)`` over the last axis (kept), with a finite gradient at ``v = 0``."""
    return jnp.sqrt(jnp.maximum(jnp.sum(v * v, axis=-1, keepdims=True), eps * eps))


def color_loss(pred: jax.Array, target: jax.Array, *, eps: float = COSINE_EPS) -> jax.Array:
    """Colour term ``0.5 * (1 - mean_{B,H,W} cos(pred_p, target_p))``, the cosine over the channel axis.

    As ``torch.nn.CosineSimilarity(dim=1, eps)`` (torch 2.x): ``(x / max(|x|, eps)) . (y / max(|y|, eps))``.
    Black pixels (|x| = 0) get a zero cosine and a finite (zero) gradient.

    Args:
      pred: ``[B, H, W, 3]``.
      target: ``[B, H, W, 3]``.
    Returns:
      scalar in [0, 1].
    """
    cos = jnp.sum((pred / _safe_norm(pred, eps)) * (target / _safe_norm(target, eps)), axis=-1)
    return 0.5 * (1.0 - jnp.mean(cos))


def luminance(img: jax.Array) -> jax.Array:
    """``Y = 0.299 R + 0.587 G + 0.114 B``.

    Args:
      img: ``[B, H, W, 3]`` RGB.
    Returns:
      ``[B, H, W, 1]``.
    """
    r, g, b = img[..., 0:1], img[..., 1:2], img[..., 2:3]
    return LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b


def mask_target(inputs: jax.Array, target: jax.Array) -> jax.Array:
    """The exposure-mask target ``T = 1[Y(target) - Y(inputs) > 0]`` (strict; 1 = under-exposed pixel).

    Args:
      inputs: ``[B, H, W, 3]`` network input.
      target: ``[B, H, W, 3]`` ground truth.
    Returns:
      ``[B, H, W, 1]`` float32 of 0/1, carrying no gradient.
    """
    t = (luminance(target) - luminance(inputs) > 0).astype(jnp.float32)
    return lax.stop_gradient(t)


def mask_bce(mask: jax.Array, target: jax.Array) -> jax.Array:
    """``torch.nn.BCELoss`` on probabilities, with each log clamped at -100.

    ``mean -[T max(log M, -100) + (1 - T) max(log(1 - M), -100)]``. Where a log is clamped its gradient is
    zero (PyTorch instead divides by ``max(M (1 - M), 1e-12)``); the values agree.

    Args:
      mask: ``[B, H, W, 1]`` predicted probability M (after the sigmoid).
      target: ``[B, H, W, 1]`` target T in [0, 1] (0/1 in RECNet).
    Returns:
      scalar.
    """
    log_m = _clamped_log(mask)
    log_1m = _clamped_log(1.0 - mask)
    return -jnp.mean(target * log_m + (1.0 - target) * log_1m)


def _clamped_log(p: jax.Array) -> jax.Array:
    """``max(log p, -100)`` with a finite gradient where ``p == 0`` (a saturated sigmoid): zero there."""
    positive = p > 0
    safe = jnp.where(positive, p, 1.0)
    return jnp.where(positive, jnp.maximum(jnp.log(safe), BCE_LOG_CLAMP), BCE_LOG_CLAMP)
