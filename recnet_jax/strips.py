"""One region-aware block over horizontal strips of the image: big photos in a fraction of the memory.

A block (RDM + MRU) is local except for three kinds of sums over the whole image: the RDM's
normalisation moments (per branch the mean, then the variance about it) and the MRU's two Gram
matrices (Q3 K3^T, Q5 K5^T). So :func:`block` runs it in four passes over strips of ``rows`` image
rows, each strip read with a halo of rows wide enough that its inner rows equal the whole-image
computation:

=====  =====  =========================================================================
pass   halo   computes (per strip)
=====  =====  =========================================================================
1      1      sum w and sum w v per branch (v the gated features, w the statistic weights) -> mu
2      1      sum w (v - mu)^2 per branch                                              -> var
3      6      F_n and F_s (kept at full size) and the rows' share of both Gram matrices
4      4      X' from F_n, F_s and X (the next block's input) and acc += X' @ W_k
=====  =====  =========================================================================

The halos are the receptive fields: the gate's 3x3 conv (pass 1, 2); the gate and tail convs, then
the 5x5 depthwise and the 5x5 grouped conv of F_s (pass 3: 1 + 1 + 2 + 2); the 5x5 value conv, then
post_in and post_out (pass 4: 2 + 1 + 1). A strip that touches the image's top or bottom row gets
the zero 'same' padding there from the convs themselves, as the whole image does; at a cut inside
the image the halo rows absorb the error of the strip's own padding.

Every strip of a pass has the same shape ``[B, rows + 2 * halo, W, C]`` (the first and the last are
shifted to start or end at the image's edge, and the last one's rows already counted are not
counted again), so each pass compiles once per image size. The sums are the whole image's up to
float32 rounding (they add in another order), so the result equals the single program's within
about 1e-6 (``tests/test_strips.py``).

Memory: the full-size tensors alive are X, F_n, F_s, X', the aggregation sum and the masks, about
5 maps of nc channels; each strip's temporaries scale with ``rows * W``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from recnet_jax import runtime
from recnet_jax.model import layers
from recnet_jax.model.mru import gram, logits_from_gram

# Halo rows per pass (module docstring).
MOMENTS_HALO, FEATURES_HALO, OUTPUT_HALO = 1, 6, 4
# Pixels per strip (rows = STRIP_PIXELS // W): a strip's maps fit in the caches of a server core.
STRIP_PIXELS = 1 << 18


@dataclasses.dataclass(frozen=True)
class Strip:
    """One strip of a pass. Input rows [start, start + size) of the image; its result rows are
    [out, out + rows) (``offset = out - start`` inside the strip); rows [lo, hi) of the image are
    counted in the sums (they partition the image over the strips of a pass)."""

    start: int
    out: int
    lo: int
    hi: int

    @property
    def offset(self) -> int:
        return self.out - self.start


def plan(height: int, rows: int, halo: int) -> tuple[int, int, list[Strip]]:
    """Strips over ``height`` image rows with ``rows`` result rows each and ``halo`` halo rows.

    Returns (size, rows, strips): the input rows every strip reads, the result rows it gives, and
    the strips top to bottom. One strip covers the whole image when it is no taller than
    ``rows + 2 * halo``.
    """
    if rows < 1:
        raise ValueError(f"strip rows must be >= 1, got {rows}")
    size = rows + 2 * halo
    if height <= size:
        return height, height, [Strip(0, 0, 0, height)]
    strips = []
    for k in range(-(-height // rows)):
        out = min(k * rows, height - rows)
        start = min(max(out - halo, 0), height - size)
        strips.append(Strip(start, out, k * rows, min((k + 1) * rows, height)))
    return size, rows, strips


def default_rows(width: int) -> int:
    """Result rows per strip for an image ``width`` pixels wide: STRIP_PIXELS // width, >= 16."""
    return max(16, STRIP_PIXELS // width)


def _rows(x: jax.Array, start, size: int) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)


def _counted(size: int, lo, hi, dtype) -> jax.Array:
    """[1, size, 1, 1]: 1 on the strip's rows [lo, hi) (strip coordinates), else 0."""
    r = jnp.arange(size)
    return ((r >= lo) & (r < hi)).astype(dtype)[None, :, None, None]


def _weighted_sum(w: jax.Array, t: jax.Array) -> jax.Array:
    """sum over pixels of w [B,H,W,1] * t [B,H,W,C] -> [B,1,1,C], as a matmul: XLA's CPU reduction
    loop with the gate fused into it takes about 7x longer than the matmul over its buffers."""
    b, _, _, c = t.shape
    s = jnp.einsum("bn,bnc->bc", w.reshape(b, -1), t.reshape(b, -1, c),
                   precision=jax.lax.Precision.HIGHEST)
    return s[:, None, None, :]


@functools.lru_cache(maxsize=16)
def _blur_fn(conv_impl: str, dtype):
    def blur(kernel, mask):
        m_u, m_o = layers.blur_masks(mask, kernel[None], conv_impl)       # [1,B,H,W,1] each
        return m_u[0].astype(dtype), m_o[0].astype(dtype)
    return runtime.inference_jit(blur)


@functools.lru_cache(maxsize=16)
def _moments_fn(graphdef, size: int, second: bool):
    """Pass 1 (second=False): totals + (sum w, sum w v) per branch; pass 2: totals + sum w (v-mu)^2,
    mu from pass 1's totals."""
    def sums(state, x, m_u, m_o, totals, first, count, start, lo, hi):
        rdm = nnx.merge(graphdef, state)
        xs = _rows(x, start, size)
        out = []
        for i, m in enumerate((_rows(m_u, start, size), _rows(m_o, start, size), None)):
            v, m = rdm.gated(i, xs, m)
            v = layers.wide(v)
            w = rdm.statistic_weights(m.astype(v.dtype)) * _counted(size, lo, hi, v.dtype)
            if second:
                mu, _ = rdm.moments_from_sums(*first[i], None, count)
                out.append(totals[i] + _weighted_sum(w, jnp.square(v - mu)))
            else:
                out.append((totals[i][0] + jnp.sum(w, axis=(1, 2), keepdims=True),
                            totals[i][1] + _weighted_sum(w, v)))
        return out
    return runtime.inference_jit(sums, static_argnums=(6,), donate_argnums=(4,))


@functools.lru_cache(maxsize=16)
def _features_fn(graphdef, size: int, rows: int):
    """Pass 3: F_n and F_s into their full-size buffers, Gram totals + this strip's rows."""
    def features(state, x, m_u, m_o, first, second, count, f_n_buf, f_s_buf, grams,
                 start, offset, out, lo, hi):
        blk = nnx.merge(graphdef, state)
        moments = [blk.rdm.moments_from_sums(*first[i], second[i], count) for i in range(3)]
        f_n = blk.rdm(_rows(x, start, size), _rows(m_u, start, size), _rows(m_o, start, size),
                      moments)
        q3, k3, q5, k5 = blk.mru.queries_keys(f_n)
        f_s = blk.mru.spatial(q3, k3, q5, k5)
        counted = _counted(size, lo, hi, layers.wide(q3).dtype)
        grams = (grams[0] + gram(q3 * counted, k3), grams[1] + gram(q5 * counted, k5))
        f_n_buf = jax.lax.dynamic_update_slice_in_dim(
            f_n_buf, _rows(f_n, offset, rows).astype(f_n_buf.dtype), out, axis=1)
        f_s_buf = jax.lax.dynamic_update_slice_in_dim(
            f_s_buf, _rows(f_s, offset, rows).astype(f_s_buf.dtype), out, axis=1)
        return f_n_buf, f_s_buf, grams
    return runtime.inference_jit(features, static_argnums=(6,), donate_argnums=(7, 8, 9))


@functools.lru_cache(maxsize=16)
def _output_fn(graphdef, size: int, rows: int):
    """Pass 4: X' into its full-size buffer, acc += X' @ W_k on this strip's counted rows."""
    def output(state, x, f_n, f_s, grams, w_k, y_buf, acc, start, offset, out, lo, hi):
        mru = nnx.merge(graphdef, state)
        tau = mru.temperature[...]
        y = mru.combine(_rows(f_n, start, size), _rows(f_s, start, size), _rows(x, start, size),
                        logits_from_gram(grams[0], tau), logits_from_gram(grams[1], tau))
        y = _rows(y, offset, rows)
        y_buf = jax.lax.dynamic_update_slice_in_dim(y_buf, y.astype(y_buf.dtype), out, axis=1)
        share = jnp.einsum("bhwi,io->bhwo", y, w_k.astype(y.dtype))
        share = share * _counted(rows, lo - out, hi - out, share.dtype)
        acc_rows = _rows(acc, out, rows)
        acc = jax.lax.dynamic_update_slice_in_dim(acc, acc_rows + share.astype(acc.dtype), out,
                                                  axis=1)
        return y_buf, acc
    return runtime.inference_jit(output, donate_argnums=(6, 7))


def block(blk, kernel: jax.Array, w_k: jax.Array, x: jax.Array, mask: jax.Array, acc: jax.Array,
          *, conv_impl: str, dtype=None, rows: int | None = None) -> tuple[jax.Array, jax.Array]:
    """One region-aware block over strips (module docstring): returns (X' [B,H,W,nc],
    acc + X' @ w_k [B,H,W,nc]).

    Args:
      blk: a :class:`recnet_jax.model.recnet.RegionAwareBlock`.
      kernel: [kh, kw], its mask blur kernel; w_k: [nc, nc], its slice of the 1x1 aggregation.
      x: [B,H,W,nc] the block input; mask: [B,H,W,1] the exposure mask M; acc: [B,H,W,nc] the
        aggregation sum so far (donated: do not use it after the call).
      conv_impl, dtype: the model's. rows: result rows per strip (None: :func:`default_rows`).
    """
    b, h, w, nc = x.shape
    dt = dtype or x.dtype
    m_u, m_o = _blur_fn(conv_impl, dt)(kernel, mask)
    rows = rows or default_rows(w)
    g_rdm, s_rdm = nnx.split(blk.rdm)
    g_blk, s_blk = nnx.split(blk)
    g_mru, s_mru = nnx.split(blk.mru)
    wide = jnp.promote_types(x.dtype, jnp.float32)

    size, _, strips = plan(h, rows, MOMENTS_HALO)
    first = [(jnp.zeros((b, 1, 1, 1), wide), jnp.zeros((b, 1, 1, nc), wide)) for _ in range(3)]
    for s in strips:
        first = _moments_fn(g_rdm, size, False)(s_rdm, x, m_u, m_o, first, None, h * w,
                                                s.start, s.lo - s.start, s.hi - s.start)
    second = [jnp.zeros((b, 1, 1, nc), wide) for _ in range(3)]
    for s in strips:
        second = _moments_fn(g_rdm, size, True)(s_rdm, x, m_u, m_o, second, first, h * w,
                                                s.start, s.lo - s.start, s.hi - s.start)

    f_dtype = dtype or wide
    f_n, f_s = jnp.zeros(x.shape, f_dtype), jnp.zeros(x.shape, f_dtype)
    grams = (jnp.zeros((b, nc, nc), wide), jnp.zeros((b, nc, nc), wide))
    size, r, strips = plan(h, rows, FEATURES_HALO)
    for s in strips:
        f_n, f_s, grams = _features_fn(g_blk, size, r)(
            s_blk, x, m_u, m_o, first, second, h * w, f_n, f_s, grams,
            s.start, s.offset, s.out, s.lo - s.start, s.hi - s.start)
    del m_u, m_o

    y = jnp.zeros(x.shape, f_dtype)
    size, r, strips = plan(h, rows, OUTPUT_HALO)
    for s in strips:
        y, acc = _output_fn(g_mru, size, r)(s_mru, x, f_n, f_s, grams, w_k, y, acc,
                                            s.start, s.offset, s.out, s.lo, s.hi)
    return y, acc
