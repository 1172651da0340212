"""Synthetic mixed exposure: (input, target) pairs made from one well-exposed photo.

Method (:func:`synthesize_pair`), all deterministic given the seed:

1. **EV map** (:func:`random_ev_map`): a smooth random field (a ``gh x gw`` grid of N(0, 1) values,
   ``gh, gw`` drawn from ``grid_size``, upsampled bicubically to H x W) is mapped monotonically to
   EV so that its median is 0 EV, its ``region_fraction`` quantile is ``-a_under`` and its
   ``1 - region_fraction`` quantile is ``+a_over`` (``a_under, a_over ~ U(ev_extreme)``), then
   clipped to ``[-ev_limit, ev_limit]``. So at least ``region_fraction`` of the pixels are
   under-exposed by ``a_under`` or more and as many over-exposed by ``a_over`` or more: every pair
   has both kinds of region. The map is rounded to float16 (the stored precision) before use.
2. **Exposure in linear light**: ``lin = srgb_to_linear(photo / 255)``; ``lin * 2**EV``.
3. **Noise** (optional): Gaussian with variance ``shot * signal + read**2`` in linear light
   (``shot``, ``read`` drawn per image from their ranges), added before clipping.
4. Clip to [0, 1], re-apply the sRGB curve, round to uint8.
5. **JPEG** (with probability ``jpeg_prob``): Pillow JPEG encode/decode at a quality drawn from
   ``jpeg_quality`` (real JPEG quantisation of the 8x8 DCT blocks, 4:2:0 chroma).

The target is the photo itself. Shapes: photo, input, target [H, W, 3] uint8; EV map [H, W].
"""

from __future__ import annotations

import dataclasses
import io
from typing import Sequence

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """Parameters of the synthesis (defaults are the embedded default data's)."""

    ev_limit: float = 2.5                       # EV map clipped to [-ev_limit, +ev_limit]
    ev_extreme: tuple[float, float] = (1.0, 2.5)  # range of a_under / a_over (see module doc)
    region_fraction: float = 0.2                # min. fraction of pixels under (and over) exposed
    grid_size: tuple[int, int] = (2, 5)         # control grid side, inclusive range
    noise: bool = True
    shot_noise: tuple[float, float] = (0.0, 2e-3)  # variance per unit linear signal
    read_noise: tuple[float, float] = (0.0, 2e-3)  # std, linear units
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (60, 95)    # inclusive


@dataclasses.dataclass(frozen=True)
class SyntheticPair:
    """One synthesized pair.

    Attributes:
      input: [H, W, 3] uint8, mixed over-/under-exposed.
      target: [H, W, 3] uint8, the source photo.
      ev_map: [H, W] float16, the exposure change applied at each pixel, in EV (stops).
      jpeg_quality: the JPEG quality used, 0 when no JPEG step was applied.
    """

    input: np.ndarray
    target: np.ndarray
    ev_map: np.ndarray
    jpeg_quality: int


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB decoding of values in [0, 1] (any shape)."""
    x = np.asarray(x, np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`srgb_to_linear`, for values in [0, 1] (any shape)."""
    x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92,
                    1.055 * np.power(x, 1 / 2.4, dtype=np.float32) - 0.055).astype(np.float32)


def _smooth_field(rng: np.random.Generator, height: int, width: int,
                  grid_size: tuple[int, int]) -> np.ndarray:
    """[H, W] float32 smooth random field: a small N(0,1) grid, bicubic-upsampled."""
    gh, gw = (int(rng.integers(grid_size[0], grid_size[1] + 1)) for _ in range(2))
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC))
    # A faint ramp breaks ties so that the quantiles below are distinct even for a flat field.
    ramp = np.linspace(-1e-3, 1e-3, height * width, dtype=np.float32).reshape(height, width)
    return field + ramp


def random_ev_map(rng: np.random.Generator, height: int, width: int,
                  config: SynthesisConfig = SynthesisConfig()) -> np.ndarray:
    """A smooth random exposure map with both under- and over-exposed regions (module doc, step 1).

    Returns:
      [H, W] float16 EV values in [-ev_limit, ev_limit].
    """
    f = _smooth_field(rng, height, width, config.grid_size)
    a_under, a_over = rng.uniform(*config.ev_extreme, size=2)
    lo, med, hi = np.quantile(f, [config.region_fraction, 0.5, 1.0 - config.region_fraction])
    ev = np.where(f < med, -a_under * (med - f) / (med - lo), a_over * (f - med) / (hi - med))
    return np.clip(ev, -config.ev_limit, config.ev_limit).astype(np.float16)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """[H, W, 3] uint8 -> the same after a Pillow JPEG encode/decode at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def synthesize_pair(photo: np.ndarray, seed: int | Sequence[int],
                    config: SynthesisConfig = SynthesisConfig()) -> SyntheticPair:
    """Make a mixed-exposure input from a well-exposed photo (module docstring for the method).

    Args:
      photo: [H, W, 3] uint8 RGB, well exposed.
      seed: anything ``np.random.default_rng`` accepts; the same seed gives the same pair.
      config: synthesis parameters.

    Returns:
      A :class:`SyntheticPair` whose ``target`` is ``photo``.
    """
    photo = np.asarray(photo)
    if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[-1] != 3:
        raise ValueError(f"photo must be [H, W, 3] uint8, got {photo.shape} {photo.dtype}")
    rng = np.random.default_rng(seed)
    h, w, _ = photo.shape
    ev_map = random_ev_map(rng, h, w, config)
    lin = srgb_to_linear(photo.astype(np.float32) / 255.0)
    lin = lin * np.exp2(ev_map.astype(np.float32))[..., None]
    if config.noise:
        shot = rng.uniform(*config.shot_noise)
        read = rng.uniform(*config.read_noise)
        sigma = np.sqrt(shot * np.clip(lin, 0.0, None) + read * read).astype(np.float32)
        lin = lin + sigma * rng.standard_normal(lin.shape, dtype=np.float32)
    out = np.round(linear_to_srgb(lin) * 255.0).astype(np.uint8)
    quality = 0
    if rng.random() < config.jpeg_prob:
        quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        out = jpeg_roundtrip(out, quality)
    return SyntheticPair(input=out, target=photo, ev_map=ev_map, jpeg_quality=quality)
