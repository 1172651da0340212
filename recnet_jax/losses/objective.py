"""The weighted RECNet training objective and the start-up check that provides its VGG.

``total = w_l1 L1 + w_ssim L_ssim + w_mask L_mask + w_color L_color + w_ecr L_ECR``, with the release's
weights 1.0, 0.1, 0.25, 1.0, 0.1 by default. ``L_ssim`` is **negative** (minus the mean SSIM).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
from absl import logging

from recnet_jax.losses import ecr as ecr_lib
from recnet_jax.losses import reconstruction as rec
from recnet_jax.losses import vgg as vgg_lib

TERMS = ("l1", "ssim", "mask", "color", "ecr")
DEFAULT_WEIGHTS: Mapping[str, float] = {"l1": 1.0, "ssim": 0.1, "mask": 0.25, "color": 1.0, "ecr": 0.1}


def resolve_weights(weights: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merges ``weights`` (a mapping or ConfigDict with any of the keys in ``TERMS``) over the defaults.

    Raises:
      ValueError: a key that is not one of ``TERMS``.
    """
    out = dict(DEFAULT_WEIGHTS)
    if weights is None:
        return out
    items = dict(weights.items())
    unknown = sorted(set(items) - set(TERMS))
    if unknown:
        raise ValueError(f"unknown loss weight keys {unknown}; valid keys are {list(TERMS)}")
    out.update(items)
    return out


def _is_zero(w: Any) -> bool:
    """True for a concrete zero weight (a traced weight is never skipped)."""
    try:
        return float(w) == 0.0
    except (TypeError, jax.errors.ConcretizationTypeError):
        return False


def loss_terms(
    output: Any,
    inputs: jax.Array,
    target: jax.Array,
    vgg: Callable[[jax.Array], jax.Array] | None,
    weights: Mapping[str, Any] | None = None,
    *,
    mask_target: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Every term of the RECNet objective and their weighted sum. Pure and jittable.

    Args:
      output: the model's ``RECNetOutput`` (any object with ``.image`` ``[B, H, W, 3]`` and ``.mask``
        ``[B, H, W, 1]``, the mask a probability).
      inputs: ``[B, H, W, 3]`` network input in [0, 1].
      target: ``[B, H, W, 3]`` ground truth in [0, 1].
      vgg: the frozen VGG16 features (:class:`~recnet_jax.losses.vgg.VGG16Features`), or None. With None, or
        a concrete ECR weight of 0, the VGG is not run: ``ecr`` is reported as 0 and left out of ``total``.
        ``H`` and ``W`` must be >= 32 when the ECR runs.
      weights: mapping with any of ``l1``, ``ssim``, ``mask``, ``color``, ``ecr`` (missing keys take the
        release's 1.0, 0.1, 0.25, 1.0, 0.1). Python floats or traced scalars.
      mask_target: optional precomputed ``[B, H, W, 1]`` BCE target; default
        ``1[Y(target) - Y(inputs) > 0]``.
    Returns:
      dict of float32 scalars: the unweighted ``l1``, ``ssim`` (minus the mean SSIM, in [-1, 1]), ``mask``
      (BCE), ``color``, ``ecr``, and ``total`` (weighted sum).
    """
    w = resolve_weights(weights)
    image, mask = output.image, output.mask
    if image.shape != target.shape or inputs.shape != target.shape or image.shape[-1] != 3:
        raise ValueError(
            f"loss_terms expects NHWC RGB image/inputs/target of one shape [B, H, W, 3], got "
            f"{image.shape}, {inputs.shape}, {target.shape}"
        )
    if mask.shape != image.shape[:3] + (1,):
        raise ValueError(
            f"loss_terms expects output.mask [B, H, W, 1] = {image.shape[:3] + (1,)}, got {mask.shape}"
        )
    t = rec.mask_target(inputs, target) if mask_target is None else jax.lax.stop_gradient(mask_target)
    terms = {
        "l1": rec.l1_loss(image, target),
        "ssim": rec.ssim_loss(image, target),
        "mask": rec.mask_bce(mask, t),
        "color": rec.color_loss(image, target),
    }
    if vgg is None or _is_zero(w["ecr"]):
        terms["ecr"] = jnp.zeros((), jnp.float32)
        active = TERMS[:4]
    else:
        terms["ecr"] = ecr_lib.ecr_loss(image, mask, inputs, target, vgg)
        active = TERMS
    total = sum(w[k] * terms[k] for k in active if not _is_zero(w[k]))
    terms["total"] = jnp.asarray(total, terms["l1"].dtype)
    return terms


def vgg_from_config(loss_cfg: Any, *, seed: int = 0) -> vgg_lib.VGG16Features | None:
    """Start-up check: the VGG that ``loss_cfg`` asks for, or a clear error before any training step.

    Args:
      loss_cfg: ``config.loss``, a ConfigDict with ``weights`` (l1/ssim/mask/color/ecr), ``vgg_weights``
        (path string, '' for none) and ``vgg_random_init`` (bool); optionally ``vgg_precision`` (the VGG
        conv precision, default 'HIGHEST'; None follows ``jax_default_matmul_precision``).
      seed: seed of the random VGG (``vgg_random_init=True`` only).
    Returns:
      None when the ECR weight is 0 (no VGG is needed); the loaded VGG when ``vgg_weights`` is set; a
      He-initialised VGG (with one logged note: an explicit opt-in, so not a warning) when
      ``vgg_random_init`` is True.
    Raises:
      FileNotFoundError: the ECR is on and ``vgg_weights`` is '' (without ``vgg_random_init``) or names a
        missing file. The message names ``config.loss.vgg_weights`` and the converter command.
      ValueError: both ``vgg_weights`` and ``vgg_random_init`` are set, or the file is not a VGG16.
    """
    w = resolve_weights(loss_cfg.weights)
    if _is_zero(w["ecr"]):
        return None
    path = str(loss_cfg.vgg_weights or "")
    random_init = bool(loss_cfg.vgg_random_init)
    precision = loss_cfg.get("vgg_precision", "HIGHEST") if hasattr(loss_cfg, "get") else "HIGHEST"
    if path and random_init:
        raise ValueError(
            f"config.loss.vgg_weights={path!r} and config.loss.vgg_random_init=True contradict "
            "each other; set one of them"
        )
    if path:
        if not pathlib.Path(path).exists():
            raise FileNotFoundError(
                f"config.loss.vgg_weights={path!r}: no such file. The ECR loss (config.loss.weights.ecr="
                f"{w['ecr']}) needs VGG16 ImageNet weights; convert torchvision's vgg16 checkpoint with "
                f"`{vgg_lib.CONVERTER_COMMAND}` and point config.loss.vgg_weights at the .npz."
            )
        return vgg_lib.load_vgg16(path, precision=precision)
    if random_init:
        logging.info(
            "config.loss.vgg_random_init=True: the ECR loss (weight %s) uses randomly initialised "
            "VGG16 features, not ImageNet weights; fine for a demo, not for training RECNet.",
            w["ecr"],
        )
        return vgg_lib.VGG16Features.random(seed, precision=precision)
    raise FileNotFoundError(
        f"the ECR loss is enabled (config.loss.weights.ecr={w['ecr']}) but no VGG16 weights are given: set "
        "config.loss.vgg_weights to a VGG16 .npz (or torchvision .pth). Convert torchvision's vgg16 "
        f"checkpoint (e.g. vgg16-397923af.pth) once with `{vgg_lib.CONVERTER_COMMAND}`. Alternatively set "
        "config.loss.weights.ecr=0 to train without the ECR, or config.loss.vgg_random_init=True for random "
        "VGG features (demo only)."
    )
