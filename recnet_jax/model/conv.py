"""``Conv``: the one convolution module of RECNet (NHWC, HWIO kernel, PyTorch's default init).

It holds the parameters and dispatches the computation to :func:`recnet_jax.model.layers.conv2d`,
so the implementation (shifted sums, FFT or plain ``lax``) is a per-backend choice, not a different
parameter layout.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recnet_jax.model import layers

# The draws torch_uniform defers inside batched_draws: [(placeholder, base key, count, shape, bound)].
_DEFERRED: contextvars.ContextVar[list | None] = contextvars.ContextVar("deferred_draws", default=None)


def torch_uniform(stream: nnx.RngStream, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    """PyTorch's default conv init for weights and biases, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn
    with the next key of ``stream`` (e.g. ``rngs.params``).

    Inside :func:`batched_draws` (with a key that allows it) the draw is deferred: this returns a
    placeholder that ``batched_draws`` replaces with the same values."""
    bound = 1.0 / math.sqrt(fan_in)
    deferred = _DEFERRED.get()
    if deferred is None:
        return jax.random.uniform(stream(), shape, jnp.float32, -bound, bound)
    base, count = stream.key[...], stream.count[...]
    key = stream()   # fold_in(base, count), and the stream moves on as usual
    if not _prefix_stable(key):
        return jax.random.uniform(key, shape, jnp.float32, -bound, bound)
    # The key is folded again with the others in one vmapped fold_in (under jit this one is dead
    # code, and XLA drops it before compiling). The placeholder is host memory: no device op.
    placeholder = np.zeros(shape, np.float32)
    deferred.append((placeholder, base, count, tuple(shape), bound))
    return placeholder


def _prefix_stable(key: jax.Array) -> bool:
    """True when ``uniform(key, shape)`` is the first prod(shape) entries of ``uniform(key, (n,))``
    for any larger n: partitionable threefry, where entry j is a function of (key, j) alone."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(key))
    else:
        impl = jax.config.jax_default_prng_impl
    return "threefry" in impl and bool(jax.config.jax_threefry_partitionable)


@contextlib.contextmanager
def batched_draws(module_of: Callable[[], nnx.Module]) -> Iterator[None]:
    """Inside, :func:`torch_uniform` defers its draws; on leaving, they are made together (one
    vmapped draw per power-of-two size instead of one per parameter) and written into the
    parameters of ``module_of()`` (the module built inside).

    The same values, bit for bit (each draw is the prefix of a longer one; ``tests/test_model.py``),
    but under ``jax.jit`` a 5-block RECNet's init compiles in about 6 s instead of 33 s (2 cores):
    XLA compiles every threefry call on its own, two per parameter (the key's fold_in and the
    draw), 204 conv weights and biases. Keys other than partitionable threefry draw at once, as
    usual. :class:`recnet_jax.RECNet` builds itself this way.
    """
    deferred: list = []
    token = _DEFERRED.set(deferred)
    try:
        yield
    finally:
        _DEFERRED.reset(token)
    if deferred:
        _fill(module_of(), deferred)


def _fill(module: nnx.Module, deferred: list) -> None:
    """Draws the deferred (placeholder, base key, count, shape, bound) and puts each into its
    Param (:func:`_draw_all`)."""
    values = _draw_all(jnp.stack([d[1] for d in deferred]), jnp.stack([d[2] for d in deferred]),
                       jnp.asarray([d[4] for d in deferred], jnp.float32),
                       tuple(d[3] for d in deferred))
    drawn = {id(d[0]): v for d, v in zip(deferred, values)}
    for _, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Param) and id(node.get_value()) in drawn:
            node.set_value(drawn.pop(id(node.get_value())))
    if drawn:
        raise RuntimeError(f"batched_draws: {len(drawn)} deferred draws did not reach a Param of "
                           "the module (a placeholder was copied or transformed on the way)")


@functools.partial(jax.jit, static_argnames="shapes")
def _draw_all(bases: jax.Array, counts: jax.Array, bounds: jax.Array,
              shapes: tuple[tuple[int, ...], ...]) -> tuple[jax.Array, ...]:
    """U(-bounds[i], bounds[i]) of shapes[i] with the key fold_in(bases[i], counts[i]) (as
    ``RngStream`` folds them), for all i: one vmapped fold_in, then one vmapped draw per
    power-of-two size, each parameter the prefix of its row. One program (eagerly too)."""
    keys = jax.vmap(jax.random.fold_in)(bases, counts)
    buckets: dict[int, list[int]] = {}
    for i, shape in enumerate(shapes):
        buckets.setdefault(1 << max(0, math.ceil(math.log2(max(math.prod(shape), 1)))), []).append(i)
    values: list = [None] * len(shapes)
    for size, idx in buckets.items():
        rows = jax.vmap(lambda k, b, n=size: jax.random.uniform(k, (n,), jnp.float32, -b, b))(
            keys[jnp.asarray(idx)], bounds[jnp.asarray(idx)])
        for row, i in zip(rows, idx):
            values[i] = row[:math.prod(shapes[i])].reshape(shapes[i])
    return tuple(values)


class Conv(nnx.Module):
    """k x k conv, stride 1, output the same size as the input.

    Params: ``kernel`` [k, k, in/groups, out] and ``bias`` [out] (None with ``use_bias=False``).
    Call: [B, H, W, in] -> [B, H, W, out], computed in ``dtype`` (when None: float32, or
    float64 for float64 input under ``jax_enable_x64``).
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, *,
                 groups: int = 1, use_bias: bool = True, padding: layers.Padding = "zero",
                 impl: str = "auto", dtype=None, rngs: nnx.Rngs):
        if in_features % groups or out_features % groups:
            raise ValueError(f"{in_features}->{out_features} channels do not split into {groups} groups")
        fan_in = (in_features // groups) * kernel_size * kernel_size
        shape = (kernel_size, kernel_size, in_features // groups, out_features)
        self.kernel = nnx.Param(torch_uniform(rngs.params, shape, fan_in))
        self.bias = nnx.Param(torch_uniform(rngs.params, (out_features,), fan_in)) if use_bias else None
        self.groups = groups
        self.padding = padding
        self.impl = impl
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or jnp.promote_types(x.dtype, jnp.float32)
        bias = None if self.bias is None else self.bias[...].astype(dtype)
        return layers.conv2d(x.astype(dtype), self.kernel[...].astype(dtype), bias,
                             groups=self.groups, padding=self.padding, impl=self.impl)
