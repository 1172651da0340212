"""MRU: the mixed-scale restoration unit (official ``MCSA`` plus the ``fuse1``/``fuse2``/``post``
layers of ``DualBlock``).

With F_n the RDM output and X the raw block input (both [B,H,W,nc]):

    P = project_in(F_n)                                   [B,H,W,2nc]
    D3, D5 = relu(dw3(P)), relu(dw5(P))                   depthwise 3x3 / 5x5
    Q3, K3 = D3[..., :nc], D3[..., nc:];  Q5, K5 likewise
    F_s = project_out([relu(g3([Q3, Q5])), relu(g5([K3, K5]))])      spatial path, grouped convs
    V3, V5 = relu(value_dw3(X)), relu(value_dw5(X))       values come from X, not F_n
    O_s = channel_attention(Q_s, K_s, V_s)  for s in {3, 5}
    F_c = project_ch([O_3, O_5])                          channel path
    X' = post_out(lrelu_0.1(post_in([fuse_local([F_n, F_s]), fuse_global([F_n, F_c])]))) + X
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from recnet_jax.model import layers
from recnet_jax.model.conv import Conv

HIGHEST = jax.lax.Precision.HIGHEST


def gram(q: jax.Array, k: jax.Array) -> jax.Array:
    """G[b,c,e] = sum_n q[b,n,c] k[b,n,e] over all pixels n: q, k [B,H,W,C] -> [B,C,C], at least
    float32, at HIGHEST precision (the sums reach hundreds).

    One plain batched matmul over the pixels, which XLA runs without transposing the [B, H*W, C]
    operands. Sums over parts of the image add up to the whole image's G (the strip-tiled
    inference of :mod:`recnet_jax.strips` relies on it).
    """
    b, h, w, c = q.shape
    return jnp.einsum("bnc,bne->bce", layers.wide(q).reshape(b, h * w, c),
                      layers.wide(k).reshape(b, h * w, c), precision=HIGHEST)


def logits_from_gram(g: jax.Array, temperature: jax.Array) -> jax.Array:
    """The heads' logits from the full Gram matrix g [B,C,C] (its diagonal d x d blocks):
    L [B, heads, d, d] with L[b,h,c,e] = temperature[h] * g[b, h*d+c, h*d+e]."""
    b, c, _ = g.shape
    heads = temperature.shape[0]
    d = c // heads
    blocks = g.reshape(b, heads, d, heads, d)
    logits = jnp.moveaxis(jnp.diagonal(blocks, axis1=1, axis2=3), -1, 1)    # [B, heads, d, d]
    return logits * temperature.astype(g.dtype)[None, :, None, None]


def channel_attention_logits(q: jax.Array, k: jax.Array, temperature: jax.Array) -> jax.Array:
    """Transposed (channel) attention logits, Q and K not normalised.

    q, k: [B,H,W,C] with C = heads * d; temperature [heads]. Returns L [B, heads, d, d] with
    L[b,h,c,e] = temperature[h] * sum_n q[b,n,h*d+c] k[b,n,h*d+e]: :func:`logits_from_gram` of
    :func:`gram` (the full C x C Gram matrix whose diagonal blocks are the heads).
    """
    return logits_from_gram(gram(q, k), temperature)


@jax.custom_vjp
def attention_softmax(logits: jax.Array) -> jax.Array:
    """Softmax over the last axis whose VJP avoids cancellation when it is nearly one-hot.

    The attention logits are sums over all pixels (hundreds), so each row of A is almost one-hot
    and the usual VJP A * (g - sum_j A_j g_j) subtracts two nearly equal numbers at the max entry.
    This VJP computes the same quantity as A_i * sum_j A_j (g_i - g_j), where the j = i term is
    exactly 0 and the others carry their own small A_j, so float32 keeps its relative accuracy
    (the gradient of the temperature depends on it).
    """
    return jax.nn.softmax(logits, axis=-1)


def _attention_softmax_fwd(logits):
    a = jax.nn.softmax(logits, axis=-1)
    return a, a


def _attention_softmax_bwd(a, g):
    diff = g[..., :, None] - g[..., None, :]                 # [..., i, j] = g_i - g_j
    return (a * jnp.sum(a[..., None, :] * diff, axis=-1),)


attention_softmax.defvjp(_attention_softmax_fwd, _attention_softmax_bwd)


def attention_matrix(logits: jax.Array) -> jax.Array:
    """The block-diagonal attention matrix A [B, C, C] (C = heads * d) of logits [B,heads,d,d]:
    A[b, h*d+i, h*d+j] = softmax_j(logits[b,h,i,:]), zero off the diagonal blocks."""
    b, heads, d, _ = logits.shape
    attn = attention_softmax(logits)                                        # [B,heads,d,d]
    return jnp.einsum("bhij,hg->bhigj", attn, jnp.eye(heads, dtype=attn.dtype)).reshape(
        b, heads * d, heads * d)


def attend(logits: jax.Array, v: jax.Array) -> jax.Array:
    """softmax_d(logits) (logits [B,heads,d,d]) applied to v [B,H,W,C] -> [B,H,W,C] (float32), as
    one matmul of v with the block-diagonal [C, C] :func:`attention_matrix`: O = V A^T."""
    b, h, w, c = v.shape
    out = jnp.einsum("bne,bce->bnc", layers.wide(v).reshape(b, h * w, c), attention_matrix(logits),
                     precision=HIGHEST)
    return out.reshape(b, h, w, c)


def channel_attention(q: jax.Array, k: jax.Array, v: jax.Array, temperature: jax.Array) -> jax.Array:
    """softmax_d(L) applied to v [B,H,W,C] -> [B,H,W,C] (float32), L from
    :func:`channel_attention_logits`."""
    return attend(channel_attention_logits(q, k, temperature), v)


class MixedScaleRestoration(nnx.Module):
    """MRU. Call ``(f_n [B,H,W,nc], x [B,H,W,nc]) -> X' [B,H,W,nc]`` (includes the residual + x)."""

    def __init__(self, nc: int = 8, *, num_heads: int = 2, impl: str = "auto", dtype=None,
                 rngs: nnx.Rngs):
        if nc % num_heads:
            raise ValueError(f"nc={nc} is not divisible by num_heads={num_heads}")
        conv = dict(impl=impl, dtype=dtype, rngs=rngs)
        self.temperature = nnx.Param(jnp.ones((num_heads,), jnp.float32))
        self.project_in = Conv(nc, 2 * nc, 1, **conv)
        self.qk_dw3 = Conv(2 * nc, 2 * nc, 3, groups=2 * nc, **conv)
        self.qk_dw5 = Conv(2 * nc, 2 * nc, 5, groups=2 * nc, **conv)
        self.local_g3 = Conv(2 * nc, nc, 3, groups=nc, **conv)
        self.local_g5 = Conv(2 * nc, nc, 5, groups=nc, **conv)
        self.project_out = Conv(2 * nc, nc, 1, **conv)
        self.value_dw3 = Conv(nc, nc, 3, groups=nc, **conv)
        self.value_dw5 = Conv(nc, nc, 5, groups=nc, **conv)
        self.project_ch = Conv(2 * nc, nc, 1, **conv)
        self.fuse_local = Conv(2 * nc, nc, 1, **conv)
        self.fuse_global = Conv(2 * nc, nc, 1, **conv)
        self.post_in = Conv(2 * nc, nc, 3, **conv)
        self.post_out = Conv(nc, nc, 3, **conv)
        self.dtype = dtype

    def queries_keys(self, f_n: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(Q3, K3, Q5, K5), each [B,H,W,nc], from F_n [B,H,W,nc]."""
        nc = f_n.shape[-1]
        p = self.project_in(f_n)
        d3 = layers.materialize(jax.nn.relu(self.qk_dw3(p)), self.qk_dw3.impl)
        d5 = layers.materialize(jax.nn.relu(self.qk_dw5(p)), self.qk_dw5.impl)
        return d3[..., :nc], d3[..., nc:], d5[..., :nc], d5[..., nc:]

    def spatial(self, q3: jax.Array, k3: jax.Array, q5: jax.Array, k5: jax.Array) -> jax.Array:
        """F_s [B,H,W,nc], the spatial path."""
        u = jax.nn.relu(self.local_g3(jnp.concatenate([q3, q5], -1)))
        w = jax.nn.relu(self.local_g5(jnp.concatenate([k3, k5], -1)))
        return self.project_out(jnp.concatenate([u, w], -1))

    def values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(V3, V5), each [B,H,W,nc]: the channel attention's values, from the block input x."""
        return jax.nn.relu(self.value_dw3(x)), jax.nn.relu(self.value_dw5(x))

    def fused_fusion_weights(self, logits3: jax.Array, logits5: jax.Array
                             ) -> tuple[jax.Array, jax.Array]:
        """The channel path and both 1x1 fusions as one per-image 1x1 conv.

        Between the value convs and ``post_in`` everything is linear: O_s = V_s A_s^T (A_s the
        :func:`attention_matrix` of the logits [B,heads,d,d]), F_c = [O_3, O_5] P + b_P, and
        [H_l, H_g] = [[F_n, F_s] L + b_L, [F_n, F_c] G + b_G]. So
        [H_l, H_g] = [F_n, F_s, V_3, V_5] W + b with, in blocks of nc rows and columns
        (L = [L_n; L_s], G = [G_n; G_c], P = [P_3; P_5]):

            W = [[L_n, G_n], [L_s, 0], [0, A_3^T P_3 G_c], [0, A_5^T P_5 G_c]],
            b = [b_L, b_P G_c + b_G].

        One 4nc -> 2nc matmul replaces two attention matmuls, three 1x1 convs and four
        concatenations (the same multiply-adds per pixel, counting the zero blocks).
        Returns (W [B, 4nc, 2nc], b [2nc]), at least float32.
        """
        nc = self.project_ch.kernel.shape[-1]
        convs = (self.fuse_local, self.fuse_global, self.project_ch)
        (lk, gk, pk), (lb, gb, pb) = ([layers.wide(getattr(c, n)[...]) for c in convs]
                                      for n in ("kernel", "bias"))
        lk, gk, pk = lk[0, 0], gk[0, 0], pk[0, 0]                      # [2nc, nc] each
        mm = functools.partial(jnp.einsum, precision=HIGHEST)
        g_c = gk[nc:]
        chan3 = mm("bji,jo->bio", attention_matrix(logits3), mm("jk,ko->jo", pk[:nc], g_c))
        chan5 = mm("bji,jo->bio", attention_matrix(logits5), mm("jk,ko->jo", pk[nc:], g_c))
        b = chan3.shape[0]
        rows_ns = jnp.concatenate([lk, jnp.concatenate([gk[:nc], jnp.zeros_like(g_c)], 0)], 1)
        rows_v = jnp.concatenate([jnp.zeros((b, 2 * nc, nc), chan3.dtype),
                                  jnp.concatenate([chan3, chan5], 1)], 2)      # rows V_3, V_5
        w = jnp.concatenate([jnp.broadcast_to(rows_ns, (b, 2 * nc, 2 * nc)), rows_v], 1)
        bias = jnp.concatenate([lb, mm("k,ko->o", pb, g_c) + gb])
        return w, bias

    def combine(self, f_n: jax.Array, f_s: jax.Array, x: jax.Array, logits3: jax.Array,
                logits5: jax.Array) -> jax.Array:
        """X' [B,H,W,nc]: the channel path (values from x, attention logits [B,heads,d,d] of the
        3x3 and 5x5 scales), both fusions (folded, :meth:`fused_fusion_weights`), the post convs
        and the residual."""
        dtype = self.dtype or jnp.promote_types(x.dtype, jnp.float32)
        v3, v5 = self.values(x)
        w, bias = self.fused_fusion_weights(logits3, logits5)
        feats = jnp.concatenate([layers.wide(t) for t in (f_n, f_s, v3, v5)], -1)
        h = (jnp.einsum("bhwi,bio->bhwo", feats, w, precision=HIGHEST) + bias).astype(dtype)
        y = self.post_out(jax.nn.leaky_relu(self.post_in(h), 0.1))
        return y + x.astype(y.dtype)

    def unfused_combine(self, f_n: jax.Array, f_s: jax.Array, x: jax.Array, logits3: jax.Array,
                        logits5: jax.Array) -> jax.Array:
        """:meth:`combine` in the release's order of operations (attention, project_ch, the two
        1x1 fusions, post convs); equal up to float rounding (tested)."""
        dtype = self.dtype or jnp.promote_types(x.dtype, jnp.float32)
        v3, v5 = self.values(x)
        o3 = attend(logits3, v3).astype(dtype)
        o5 = attend(logits5, v5).astype(dtype)
        f_c = self.project_ch(jnp.concatenate([o3, o5], -1))
        h_l = self.fuse_local(jnp.concatenate([f_n, f_s], -1))
        h_g = self.fuse_global(jnp.concatenate([f_n, f_c], -1))
        y = self.post_out(jax.nn.leaky_relu(self.post_in(jnp.concatenate([h_l, h_g], -1)), 0.1))
        return y + x.astype(y.dtype)

    def __call__(self, f_n: jax.Array, x: jax.Array) -> jax.Array:
        q3, k3, q5, k5 = self.queries_keys(f_n)
        tau = self.temperature[...]
        return self.combine(f_n, self.spatial(q3, k3, q5, k5), x,
                            channel_attention_logits(q3, k3, tau),
                            channel_attention_logits(q5, k5, tau))
