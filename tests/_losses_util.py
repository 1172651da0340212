"""Shared helpers for tests/test_losses*.py: the loss fixture, NHWC views and jitted loss functions.

Module-level jitted functions are shared by every test module that imports this file, so each shape
compiles once per run.
"""

from __future__ import annotations

import functools
import pathlib
from typing import NamedTuple

import jax
import numpy as np

from recnet_jax import losses

LOSS_FIXTURE = "official_recnet_loss_a.npz"
# loss_terms key -> fixture key.
TERM_KEYS = {
    "l1": "loss/l1",
    "ssim": "loss/ssim_loss",
    "mask": "loss/bce",
    "color": "loss/color",
    "ecr": "loss/exc",
    "total": "loss/total",
}
# loss_terms key -> fixture term name under grad_term/.
GRAD_TERM_KEYS = {"l1": "l1", "ssim": "ssim_loss", "mask": "bce", "color": "color", "ecr": "exc"}
TERM_RTOL = {"l1": 1e-5, "ssim": 1e-5, "mask": 1e-5, "color": 1e-5, "ecr": 5e-5, "total": 1e-5}


class ImageMask(NamedTuple):
    """A stand-in for the model output's ``.image`` [B, H, W, 3] and ``.mask`` [B, H, W, 1] (a pytree)."""

    image: jax.Array
    mask: jax.Array


def nhwc(a: np.ndarray) -> np.ndarray:
    """NCHW fixture array -> NHWC."""
    return np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1)))


@functools.lru_cache(maxsize=2)
def load_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def vgg_mapping(fx: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fixture's ``vgg/<i>.weight|bias`` entries (OIHW)."""
    return {k: v for k, v in fx.items() if k.startswith("vgg/")}


def rel_err(a, b) -> float:
    a, b = float(a), float(b)
    return abs(a - b) / abs(b)


def tensor_err(a, b) -> float:
    """max |a - b| / max |b| (0 when both are zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max()
    diff = np.abs(a - b).max()
    return float(diff / scale) if scale > 0 else float(diff)


@jax.jit
def terms_jit(out: ImageMask, lq, gt, vgg):
    """loss_terms with the release's weights, jitted."""
    return losses.loss_terms(out, lq, gt, vgg)


@jax.jit
def ecr_terms_jit(out: ImageMask, lq, gt, vgg):
    return losses.ecr_terms(out.image, out.mask, lq, gt, vgg)
