"""Jitted RECNet inference: the whole model in one program, or memory-lean in stages for big photos.

    image, mask = inference.predict(model, images)       # [B,H,W,3] float in [0,1] -> [B,H,W,3], [B,H,W,1]
    image, mask = inference.predict(model, images, lean=True)

Both paths compute the same function as ``model(images).image`` / ``.mask``, on the full image (no
tiling, so no seams):

* ``lean=False``: ``model(images)`` under one ``jax.jit`` (cached per graphdef, one compile per
  input shape). On CPU it keeps about 530 bytes of temporaries per pixel.
* ``lean=True``: the same modules called in order as separately jitted stages: stem + EMP, then one
  stage per region-aware block (its mask blur, the block, and its share of the 1x1 aggregation
  accumulated as ``acc += X_k @ W_k``, so the five block outputs are never held together), then the
  refine head. The block stage is one compiled function shared by all blocks (they have one
  graphdef); the carried ``x`` and ``acc`` are donated. Peak is about 430 bytes per pixel of
  temporaries and arguments. The results equal the single program's to float32 rounding (the
  aggregation sums in another order; ``tests/test_enhance.py`` checks 1e-5).
* ``predict(..., lean=None)`` picks ``lean`` from ``LEAN_MIN_PIXELS`` (1 MP) per image.

On CPU every program is compiled with XLA's memory-optimised scheduler
(``xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED``; the default, concurrency-optimised
scheduler keeps about 800 bytes per pixel live for the whole model). Measured sizes and times:
``docs/evaluation.md`` and ``python -m recnet_jax.bench --suite enhance``.

The lean path mirrors :meth:`recnet_jax.RECNet.__call__` (stem, EMP, ``layers.blur_masks``, blocks,
aggregation, refine, ``clip(r + 1e-5, 0, 1)``) through the modules' public attributes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from recnet_jax.model import layers

LEAN_MIN_PIXELS = 1 << 20
MEMORY_OPTIMIZED_CPU = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def compiler_options() -> dict | None:
    """XLA options for inference programs: the memory-optimised scheduler on CPU, else None."""
    return dict(MEMORY_OPTIMIZED_CPU) if jax.default_backend() == "cpu" else None


def jit(fn, **kwargs):
    """``jax.jit`` with :func:`compiler_options`."""
    return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


@functools.lru_cache(maxsize=8)
def model_apply(graphdef):
    """``apply(state, images) -> (image [B,H,W,3], mask [B,H,W,1])``: the whole model, jitted."""
    def apply(state, images):
        out = nnx.merge(graphdef, state)(images)
        return out.image, out.mask
    return jit(apply)


@functools.lru_cache(maxsize=8)
def _head_fn(graphdef):
    def head(state, images):
        stem, emp = nnx.merge(graphdef, state)
        f0 = layers.materialize(stem(layers.wide(images)), stem.impl)
        return f0, emp(f0)
    return jit(head)


@functools.lru_cache(maxsize=8)
def _block_fn(graphdef, conv_impl: str, dtype):
    def block(state, kernel, w_k, x, mask, acc):
        blk = nnx.merge(graphdef, state)
        m_u, m_o = layers.blur_masks(mask, kernel[None], conv_impl)       # [1,B,H,W,1] each
        dt = dtype or x.dtype
        y = blk(x, m_u[0].astype(dt), m_o[0].astype(dt))
        return y, acc + jnp.einsum("bhwi,io->bhwo", y, w_k.astype(y.dtype))
    return jit(block, donate_argnums=(3, 5))


@functools.lru_cache(maxsize=8)
def _tail_fn(graphdef):
    def tail(state, acc, bias):
        r = nnx.merge(graphdef, state)(acc + bias.astype(acc.dtype))
        return jnp.clip(layers.wide(r) + 1e-5, 0.0, 1.0)
    return jit(tail)


def predict_lean(model, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The staged, memory-lean forward pass (module docstring). images [B,H,W,3] float in [0, 1]."""
    from recnet_jax.model.recnet import check_images

    check_images(images)
    g_head, s_head = nnx.split((model.stem, model.emp))
    f0, mask = _head_fn(g_head)(s_head, images)
    nc = f0.shape[-1]
    w_agg = model.aggregate.kernel[...][0, 0]                                # [K*nc, nc]
    x, acc = f0, jnp.zeros(f0.shape, jnp.promote_types(f0.dtype, jnp.float32))
    del f0
    for k, blk in enumerate(model.blocks):
        g_blk, s_blk = nnx.split(blk)
        kernel = blk.rdm.blur_kernel[...]
        x, acc = _block_fn(g_blk, model.conv_impl, model.dtype)(
            s_blk, kernel, w_agg[k * nc:(k + 1) * nc], x, mask, acc)
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
