"""RDM: the region-aware de-exposure module (official class ``RIN``, state_dict prefix ``norm.``).

Three branches, i = under (region weight m_u = G * M), over (m_o = G * (1 - M)) and global (m = 1):

    Y_i = X * m_i                                       [B,H,W,C]
    A_i = sigmoid(gate_i([mean_c(Y_i), max_c(Y_i), m_i]))   [B,H,W,1]   (CBAM-like spatial gate)
    N_i = norm(...)                                     (the two variants below)
    Z_i = tail_i(N_i)                                   3x3 conv, no bias
    F_n = (1 - alpha) * fuse_under([Z_u, Z_g]) + alpha * fuse_over([Z_o, Z_g])

``norm_variant='official'`` (bit-compatible with the release): N_i = IN(Y_i * A_i), one affine
instance norm shared by the branches, statistics over all H*W pixels, biased variance.

``norm_variant='paper'``: region-aware normalisation with masked moment statistics of
Y'_i = X * A_i, weighted by max(m_i, 0), and the result restricted to the region again (see
:func:`masked_instance_norm`; the clamp keeps the statistics defined for any learned blur kernel).
The global branch (m = 1) is plain instance norm.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from recnet_jax.model import layers
from recnet_jax.model.conv import Conv

NORM_VARIANTS = ("paper", "official")


def instance_norm(v: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5,
                  moments: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """Affine instance norm of [B,H,W,C] over H, W with the biased variance (PyTorch's
    ``InstanceNorm2d(affine=True)``); scale, bias [C]. Computed in at least float32.

    ``moments``: (mu, var), each [B,1,1,C], when they were computed elsewhere (the strip-tiled
    inference of :mod:`recnet_jax.strips` sums them over the whole image); None computes them here.
    """
    v = layers.wide(v)
    if moments is None:
        mu = jnp.mean(v, axis=(1, 2), keepdims=True)
        var = jnp.mean(jnp.square(v - mu), axis=(1, 2), keepdims=True)
    else:
        mu, var = moments
    return scale * (v - mu) * jax.lax.rsqrt(var + eps) + bias


def region_weights(m: jax.Array) -> jax.Array:
    """The weights the paper variant's statistics use: max(m, 0), [B,H,W,1].

    The blur kernels are learned and unconstrained (as in the release), and Adam moves every entry
    by about the learning rate whatever its gradient's size, so after a few steps m_u = G * M can
    dip below 0 and its sum over the image can turn negative. Negative weights make the weighted
    variance negative and its rsqrt NaN; clamped weights keep both statistics a convex average
    (variance >= 0) for any learned kernel. At initialisation (a normalised Gaussian, M in (0, 1))
    the clamp is the identity.
    """
    return jnp.maximum(m, 0.0)


def masked_moments(y: jax.Array, m: jax.Array, eps: float = 1e-5) -> tuple[jax.Array, jax.Array]:
    """Per image and channel, the mean and variance of y [B,H,W,C] weighted by w = max(m, 0)
    (m [B,H,W,1], see :func:`region_weights`):

        mu  = sum(w * y) / (sum(w) + eps),  var = max(sum(w * (y - mu)^2) / (sum(w) + eps), 0)

    Returns (mu, var), each [B,1,1,C]. Pixels with w = 0 do not enter either statistic; a region
    with no weight at all gives mu = 0, var = 0 (finite, and the output is then 0 there).
    """
    y = layers.wide(y)
    w = region_weights(m.astype(y.dtype))
    denom = jnp.sum(w, axis=(1, 2), keepdims=True) + eps
    mu = jnp.sum(w * y, axis=(1, 2), keepdims=True) / denom
    var = jnp.sum(w * jnp.square(y - mu), axis=(1, 2), keepdims=True) / denom
    return mu, jnp.maximum(var, 0.0)


def masked_instance_norm(y: jax.Array, m: jax.Array, scale: jax.Array, bias: jax.Array,
                         eps: float = 1e-5,
                         moments: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """Region-aware normalisation: w * (scale * (y - mu) / sqrt(var + eps) + bias), with
    w = max(m, 0) and the masked moments of :func:`masked_moments` (or the given ``moments``,
    as in :func:`instance_norm`). y [B,H,W,C], m [B,H,W,1], scale/bias [C] -> [B,H,W,C]."""
    mu, var = masked_moments(y, m, eps) if moments is None else moments
    y = layers.wide(y)
    return region_weights(m.astype(y.dtype)) * (scale * (y - mu) * jax.lax.rsqrt(var + eps) + bias)


class RegionAwareDeExposure(nnx.Module):
    """RDM. Call ``(x [B,H,W,nc], m_u [B,H,W,1], m_o [B,H,W,1]) -> F_n [B,H,W,nc]``.

    The region weights come from :func:`recnet_jax.model.layers.blur_masks` with this module's
    ``blur_kernel`` [blur_size, blur_size] (the model blurs the shared mask once for all blocks).
    """

    def __init__(self, nc: int = 8, *, blur_size: int = 31, norm_variant: str = "paper",
                 norm_eps: float = 1e-5, impl: str = "auto", dtype=None, rngs: nnx.Rngs):
        if norm_variant not in NORM_VARIANTS:
            raise ValueError(f"norm_variant must be one of {NORM_VARIANTS}, got {norm_variant!r}")
        if blur_size % 2 != 1:
            raise ValueError(f"blur_size must be odd, got {blur_size}")
        conv = dict(impl=impl, dtype=dtype, rngs=rngs)
        self.blur_kernel = nnx.Param(jnp.asarray(layers.gaussian_kernel(blur_size, 3.0)))
        self.gates = nnx.List([Conv(3, 1, 3, use_bias=False, **conv) for _ in range(3)])
        self.norm_scale = nnx.Param(jnp.ones((nc,), jnp.float32))
        self.norm_bias = nnx.Param(jnp.zeros((nc,), jnp.float32))
        self.tails = nnx.List([Conv(nc, nc, 3, use_bias=False, **conv) for _ in range(3)])
        self.fuse_under = Conv(2 * nc, nc, 1, **conv)
        self.fuse_over = Conv(2 * nc, nc, 1, **conv)
        self.alpha = nnx.Param(jnp.full((1,), 0.5, jnp.float32))
        self.norm_variant = norm_variant
        self.norm_eps = norm_eps
        self.dtype = dtype

    def gated(self, i: int, x: jax.Array, m: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """The input of branch i's normalisation and its region weight.

        Args:
          i: 0 under, 1 over, 2 global.
          x: [B,H,W,nc] block input; m: [B,H,W,1] region weight, None for the global branch (m = 1).
        Returns:
          (v, m): v [B,H,W,nc] is Y_i * A_i ('official') or X * A_i ('paper'), m [B,H,W,1].
        """
        mean, top = jnp.mean(x, -1, keepdims=True), jnp.max(x, -1, keepdims=True)
        if m is None:
            m = jnp.ones(x.shape[:3] + (1,), x.dtype)
            y = x
            gate_in = [mean, top, m]
        else:
            # The channel mean and max of Y_i = X * m from those of X, which the three branches
            # share (XLA computes each reduction once): mean_c(X m) = m mean_c(X), and max_c(X m) is
            # m max_c(X) where m >= 0, m min_c(X) where m < 0 (exact: scaling by m is monotone).
            # Three reductions over the channels per block instead of six.
            m = m.astype(x.dtype)
            y = x * m
            gate_in = [m * mean, jnp.where(m >= 0, m * top, m * jnp.min(x, -1, keepdims=True)), m]
        a = jax.nn.sigmoid(self.gates[i](jnp.concatenate(gate_in, axis=-1)))
        return (y * a if self.norm_variant == "official" else x * a), m

    def statistic_weights(self, m: jax.Array) -> jax.Array:
        """Each pixel's weight in its branch's normalisation statistics, [B,H,W,1]: max(m, 0) in
        'paper' (:func:`region_weights`), 1 in 'official'; m as returned by :meth:`gated`."""
        return region_weights(m) if self.norm_variant == "paper" else jnp.ones_like(m)

    def moments_from_sums(self, s0: jax.Array, s1: jax.Array, s2: jax.Array | None,
                          count: int) -> tuple[jax.Array, jax.Array | None]:
        """A branch's (mu, var) from sums over the image's pixels (the strip-tiled inference).

        With w from :meth:`statistic_weights`: s0 = sum w [B,1,1,1], s1 = sum w v and
        s2 = sum w (v - mu)^2 [B,1,1,C] (None before mu is known); count = H * W. The divisor is
        s0 + eps in 'paper' (:func:`masked_moments`), count in 'official' (:func:`instance_norm`).
        Returns (mu, var or None), each [B,1,1,C].
        """
        denom = s0 + self.norm_eps if self.norm_variant == "paper" else float(count)
        var = None if s2 is None else s2 / denom
        if var is not None and self.norm_variant == "paper":
            var = jnp.maximum(var, 0.0)
        return s1 / denom, var

    def normalized(self, i: int, x: jax.Array, m: jax.Array | None,
                   moments: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        """N_i [B,H,W,nc], branch i's normalised features (before its tail conv), at least float32;
        ``moments`` as in :func:`instance_norm`."""
        v, m = self.gated(i, x, m)
        scale, bias = self.norm_scale[...], self.norm_bias[...]
        if self.norm_variant == "official":
            return instance_norm(v, scale, bias, self.norm_eps, moments)
        return masked_instance_norm(v, m, scale, bias, self.norm_eps, moments)

    def branch(self, i: int, x: jax.Array, m: jax.Array | None) -> jax.Array:
        """Branch i (0 under, 1 over, 2 global with m=None meaning m = 1) -> Z_i [B,H,W,nc]."""
        return self.tails[i](self.normalized(i, x, m).astype(self.dtype or layers.wide(x).dtype))

    def fused_tail_kernel(self) -> tuple[jax.Array, jax.Array]:
        """The three tail convs, the two 1x1 fusions and the alpha mix as one 3x3 conv.

        Everything after the norms is linear: tails have no bias and the fusions are 1x1, so
        F_n = conv3x3([N_u, N_o, N_g], K) + b with
        K = [T_u (1-a) U_1; T_o a O_1; T_g ((1-a) U_2 + a O_2)], b = (1-a) b_U + a b_O, where U, O are
        the fuse_under/fuse_over kernels split into their Z_i and Z_g halves. One 24->8 conv
        replaces three 8->8 convs and two 1x1 convs (same multiply-adds, fewer passes).
        Returns (K [3, 3, 3nc, nc], b [nc]) in the parameters' dtype.
        """
        nc = self.norm_scale.shape[0]
        a = self.alpha[...][0]
        under, over = self.fuse_under.kernel[...][0, 0], self.fuse_over.kernel[...][0, 0]  # [2nc, nc]
        mixes = [(1.0 - a) * under[:nc], a * over[:nc], (1.0 - a) * under[nc:] + a * over[nc:]]
        kernel = jnp.concatenate(
            [jnp.einsum("hwic,co->hwio", tail.kernel[...], mix, precision=jax.lax.Precision.HIGHEST)
             for tail, mix in zip(self.tails, mixes)], axis=2)
        bias = (1.0 - a) * self.fuse_under.bias[...] + a * self.fuse_over.bias[...]
        return kernel, bias

    def __call__(self, x: jax.Array, m_u: jax.Array, m_o: jax.Array,
                 moments: list[tuple[jax.Array, jax.Array]] | None = None) -> jax.Array:
        """F_n [B,H,W,nc]; ``moments``: the three branches' (mu, var), as in :func:`instance_norm`."""
        dtype = self.dtype or layers.wide(x).dtype
        moments = moments or [None] * 3
        n = jnp.concatenate([self.normalized(i, x, m, mom)
                             for i, (m, mom) in enumerate(zip((m_u, m_o, None), moments))],
                            axis=-1).astype(dtype)
        kernel, bias = self.fused_tail_kernel()
        return layers.conv2d(n, kernel.astype(dtype), bias.astype(dtype), impl=self.tails[0].impl)

    def unfused(self, x: jax.Array, m_u: jax.Array, m_o: jax.Array) -> jax.Array:
        """The release's order of operations (tails, 1x1 fusions, alpha mix); equals ``__call__``
        up to float rounding (tested)."""
        z_u = self.branch(0, x, m_u)
        z_o = self.branch(1, x, m_o)
        z_g = self.branch(2, x, None)
        alpha = self.alpha[...].astype(z_u.dtype)
        return ((1.0 - alpha) * self.fuse_under(jnp.concatenate([z_u, z_g], -1))
                + alpha * self.fuse_over(jnp.concatenate([z_o, z_g], -1)))
