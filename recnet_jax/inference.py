"""Jitted RECNet inference: the whole model in one program, or memory-lean in stages for big photos.

    image, mask = inference.predict(model, images)       # [B,H,W,3] float in [0,1] -> [B,H,W,3], [B,H,W,1]
    image, mask = inference.predict(model, images, lean=True)

Both paths compute the same function as ``model(images).image`` / ``.mask``, on the full image:

* ``lean=False``: ``model(images)`` under one ``jax.jit`` (cached per graphdef, one compile per
  input shape). On CPU it keeps about 530 bytes of temporaries per pixel.
* ``lean=True``: the same modules called in order as separately jitted stages: stem + EMP, then per
  region-aware block its mask blur and the block over horizontal strips of the image
  (:mod:`recnet_jax.strips`: four passes, each strip read with a halo, the image-wide sums of the
  normalisation and the attention added up over the strips, so there are no seams), each block
  adding its share of the 1x1 aggregation as ``acc += X_k @ W_k`` (the five block outputs are
  never held together), then the refine head. The full-size tensors alive in a block are about
  five maps of nc channels; a strip's temporaries scale with its width. The results equal the
  single program's to float32 rounding (the sums add in another order; ``tests/test_enhance.py``
  checks 1e-5, ``tests/test_strips.py`` the blocks).
* ``predict(..., lean=None)`` picks ``lean`` from ``LEAN_MIN_PIXELS`` (1.5 MP) per image.

On CPU every program is compiled with XLA's memory-optimised scheduler
(:func:`recnet_jax.runtime.inference_jit`). Measured sizes and times: ``docs/evaluation.md`` and
``python -m recnet_jax.bench --suite enhance``.

The lean path mirrors :meth:`recnet_jax.RECNet.__call__` (stem, EMP, ``layers.blur_masks``, blocks,
aggregation, refine, ``clip(r + 1e-5, 0, 1)``) through the modules' public attributes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from recnet_jax import runtime, strips
from recnet_jax.model import layers

# From 1.5 MP the staged path (its memory grows with the width, not the area), so a 2 MP photo
# already takes it. Below, the single program is faster (1024^2 on 2 cores: 1.57 s against 1.81 s
# staged) with 0.56 GB of temporaries.
LEAN_MIN_PIXELS = 3 << 19


@functools.lru_cache(maxsize=8)
def model_apply(graphdef):
    """``apply(state, images) -> (image [B,H,W,3], mask [B,H,W,1])``: the whole model, jitted."""
    def apply(state, images):
        out = nnx.merge(graphdef, state)(images)
        return out.image, out.mask
    return runtime.inference_jit(apply)


@functools.lru_cache(maxsize=8)
def _head_fn(graphdef):
    def head(state, images):
        stem, emp = nnx.merge(graphdef, state)
        f0 = layers.materialize(stem(layers.wide(images)), stem.impl)
        return f0, emp(f0)
    return runtime.inference_jit(head)


@functools.lru_cache(maxsize=8)
def _tail_fn(graphdef):
    def tail(state, acc, bias):
        r = nnx.merge(graphdef, state)(acc + bias.astype(acc.dtype))
        return jnp.clip(layers.wide(r) + 1e-5, 0.0, 1.0)
    return runtime.inference_jit(tail)


def predict_lean(model, images: jax.Array, *, rows: int | None = None
                 ) -> tuple[jax.Array, jax.Array]:
    """The staged, memory-lean forward pass (module docstring). images [B,H,W,3] float in [0, 1];
    rows: result rows per strip of the blocks (None: :func:`recnet_jax.strips.default_rows`)."""
    from recnet_jax.model.recnet import check_images

    check_images(images)
    g_head, s_head = nnx.split((model.stem, model.emp))
    f0, mask = _head_fn(g_head)(s_head, images)
    nc = f0.shape[-1]
    w_agg = model.aggregate.kernel[...][0, 0]                                # [K*nc, nc]
    x, acc = f0, jnp.zeros(f0.shape, jnp.promote_types(f0.dtype, jnp.float32))
    del f0
    for k, blk in enumerate(model.blocks):
        x, acc = strips.block(blk, blk.rdm.blur_kernel[...], w_agg[k * nc:(k + 1) * nc], x, mask,
                              acc, conv_impl=model.conv_impl, dtype=model.dtype, rows=rows)
    del x
    g_tail, s_tail = nnx.split(model.refine)
    image = _tail_fn(g_tail)(s_tail, acc, model.aggregate.bias[...])
    return image, mask


def predict(model, images: jax.Array, *, lean: bool | None = None) -> tuple[jax.Array, jax.Array]:
    """RECNet's corrected image and exposure mask for a batch.

    Args:
      model: a :class:`recnet_jax.RECNet`.
      images: [B, H, W, 3] float in [0, 1].
      lean: True for the staged path, False for the single program, None: staged from
        ``LEAN_MIN_PIXELS`` pixels per image.
    Returns:
      (image [B, H, W, 3] in [0, 1], mask [B, H, W, 1] in (0, 1)), jax arrays.
    """
    if lean is None:
        lean = images.shape[1] * images.shape[2] >= LEAN_MIN_PIXELS
    if lean:
        return predict_lean(model, images)
    graphdef, state = nnx.split(model)
    return model_apply(graphdef)(state, images)
