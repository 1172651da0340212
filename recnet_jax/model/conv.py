"""``Conv``: the one convolution module of RECNet (NHWC, HWIO kernel, PyTorch's default init).

It holds the parameters and dispatches the computation to :func:`recnet_jax.model.layers.conv2d`,
so the implementation (shifted sums, FFT or plain ``lax``) is a per-backend choice, not a different
parameter layout.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from recnet_jax.model import layers


def torch_uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    """PyTorch's default conv init for weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


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
        self.kernel = nnx.Param(torch_uniform(rngs.params(), shape, fan_in))
        self.bias = nnx.Param(torch_uniform(rngs.params(), (out_features,), fan_in)) if use_bias else None
        self.groups = groups
        self.padding = padding
        self.impl = impl
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or jnp.promote_types(x.dtype, jnp.float32)
        bias = None if self.bias is None else self.bias[...].astype(dtype)
        return layers.conv2d(x.astype(dtype), self.kernel[...].astype(dtype), bias,
                             groups=self.groups, padding=self.padding, impl=self.impl)
