"""Layer primitives of RECNet, each with a fast and a plain implementation.

XLA on CPU runs depthwise, grouped and large-kernel convolutions far below the speed of dense ones
(measured at 512^2: a 31x31 one-channel conv 140 ms, a depthwise 5x5 over 16 channels 164 ms, a dense
3x3 8->8 conv 7.5 ms). So the primitives here come in two forms that compute the same function:

* ``'lax'``: ``lax.conv_general_dilated`` (what a GPU or TPU runs well);
* ``'fast'``: depthwise and grouped convs as fused shifted multiply-adds, and the large single-channel
  blur as an exact FFT convolution (what a CPU runs well).

``resolve_impl('auto')`` picks ``'fast'`` on CPU and ``'lax'`` elsewhere. Every function is a
cross-correlation (no kernel flip) with stride 1, as in PyTorch, on NHWC activations and HWIO kernels
``(kh, kw, in/groups, out)``.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from recnet_jax.model import remat

Padding = Literal["zero", "edge"]

_DIMS = ("NHWC", "HWIO", "NHWC")


def wide(x: jax.Array) -> jax.Array:
    """x cast to at least float32 (bfloat16 -> float32; float64 stays float64 under jax_enable_x64).
    Statistics, attention and outputs use this precision whatever the conv compute dtype."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def resolve_impl(impl: str, backend: str | None = None) -> str:
    """Maps ``'auto'`` to ``'fast'`` on CPU and ``'lax'`` on GPU/TPU; checks the name."""
    if impl not in ("auto", "fast", "lax"):
        raise ValueError(f"conv_impl must be 'auto', 'fast' or 'lax', got {impl!r}")
    if impl != "auto":
        return impl
    backend = backend or jax.default_backend()
    return "fast" if backend == "cpu" else "lax"


def materialize(x: jax.Array, impl: str = "auto") -> jax.Array:
    """x [..., C], computed once into its own buffer on the 'fast' (CPU) path; x itself otherwise.

    XLA on CPU fuses a cheap producer, such as a shifted-sum conv, into every consumer (each slice,
    pad or concatenation of it) and so recomputes it once per consumer, with the slow elemental
    code of those fusions. A product with the C x C identity is a matmul, whose operand and result
    are buffers, so the producer runs once (``optimization_barrier``, which would say the same, is
    removed by XLA's CPU pipeline). Exact for finite x (x * 1 plus exact zeros); an inf in one
    channel turns the pixel's other channels NaN, which RECNet's per-image statistics do anyway.
    """
    if resolve_impl(impl) != "fast":
        return x
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    return jnp.einsum("...c,ce->...e", x, eye, precision=lax.Precision.HIGHEST)


def pad_same(x: jax.Array, kh: int, kw: int, mode: Padding = "zero") -> jax.Array:
    """Pads [B,H,W,C] by (kh//2, kw//2) on each side: zeros, or the edge value ('edge' = PyTorch's
    ``padding_mode='replicate'``)."""
    if mode not in ("zero", "edge"):
        raise ValueError(f"padding must be 'zero' or 'edge', got {mode!r}")
    ph, pw = kh // 2, kw // 2
    if ph == 0 and pw == 0:
        return x
    widths = ((0, 0), (ph, ph), (pw, pw), (0, 0))
    return jnp.pad(x, widths, mode="edge") if mode == "edge" else jnp.pad(x, widths)


def conv_lax(x: jax.Array, kernel: jax.Array, groups: int = 1) -> jax.Array:
    """'VALID' cross-correlation of an already padded [B,H',W',Cin] with HWIO ``kernel``."""
    return lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=_DIMS,
                                    feature_group_count=groups)


def _conv_shifted_impl(x: jax.Array, kernel: jax.Array, groups: int, offset: int = 0) -> jax.Array:
    kh, kw, cin_g, cout = kernel.shape
    b, hp, wp, cin = x.shape
    if cin != cin_g * groups or cout % groups:
        raise ValueError(f"kernel {kernel.shape} does not fit {cin} input channels in {groups} groups")
    h, w = hp - 2 * offset - kh + 1, wp - 2 * offset - kw + 1
    out_g = cout // groups
    wg = kernel.reshape(kh, kw, cin_g, groups, out_g)

    def shifted_sum(planes, weight):   # sum over taps (i, j) and planes r of window * weight(i, j, r)
        acc = None
        for i in range(kh):
            for j in range(kw):
                for r, plane in enumerate(planes):
                    term = plane[:, offset + i:offset + i + h, offset + j:offset + j + w] * weight(i, j, r)
                    acc = term if acc is None else acc + term
        return acc

    if groups == 1:
        # Dense and narrow (e.g. 3 -> 8): vectorise over the output channels.
        return shifted_sum([x[..., r:r + 1] for r in range(cin_g)],
                           lambda i, j, r: wg[i, j, r, 0])                     # [B,H,W,Cout]
    # Grouped: channel-planar, one [B, H', W', groups] plane per in-group index r and one
    # accumulator per out-group index o, so every multiply-add runs over `groups` contiguous
    # channels (a minor axis of size cin_g or out_g does not vectorise). Against the earlier
    # [..., groups, cin_g] layout, alternated in one process on 2 CPU cores: model inference at
    # 512^2 3% faster, the L1 gradient at 2 x 128^2 6% faster.
    planes = [x[..., r::cin_g] for r in range(cin_g)]
    outs = [shifted_sum(planes, lambda i, j, r, o=o: wg[i, j, r, :, o])     # [B,H,W,groups] each
            for o in range(out_g)]
    return outs[0] if out_g == 1 else jnp.stack(outs, axis=-1).reshape(b, h, w, cout)


def kernel_grad_fft(x: jax.Array, g: jax.Array, kh: int, kw: int, groups: int) -> jax.Array:
    """The kernel gradient of a 'VALID' grouped cross-correlation, by FFT.

    dK[i, j, r, o] = sum_{b,y,x} x[b, y+i, x+j, group(o)*cin_g + r] * g[b, y, x, o], computed as the
    correlation of each input channel with the output channels of its group (one real FFT per
    channel and image, the sum over the batch in the frequency domain). XLA's CPU reductions for
    this (one per tap) run 10-20x slower.

    Args:
      x: [B, H + kh - 1, W + kw - 1, Cin] (the padded input); g: [B, H, W, Cout] (output cotangent).
    Returns:
      [kh, kw, Cin/groups, Cout] in at least float32.
    """
    b, hp, wp, cin = x.shape
    cout = g.shape[-1]
    cin_g, out_g = cin // groups, cout // groups
    fh, fw = _fft_size(hp), _fft_size(wp)   # >= the padded size: no wrap-around for lags >= 0
    # x is a saved forward value: untied, XLA computes (and keeps) its spectrum during the forward
    # pass, for every conv at once (measured: 0.73 GB more temporaries in the training step).
    x = remat.tie(x, g)
    xs = jnp.fft.rfft2(jnp.moveaxis(wide(x), -1, 1), s=(fh, fw))
    gs = jnp.fft.rfft2(jnp.moveaxis(wide(g), -1, 1), s=(fh, fw))
    xs = xs.reshape(b, groups, cin_g, fh, fw // 2 + 1)
    gs = gs.reshape(b, groups, out_g, fh, fw // 2 + 1)
    prod = jnp.sum(xs[:, :, :, None] * jnp.conj(gs)[:, :, None], axis=0)   # [g, r, o, fh, fw//2+1]
    corr = jnp.fft.irfft2(prod, s=(fh, fw))[..., :kh, :kw]             # [g, r, o, kh, kw]
    return corr.transpose(3, 4, 1, 0, 2).reshape(kh, kw, cin_g, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_shifted(x: jax.Array, kernel: jax.Array, groups: int, offset: int = 0) -> jax.Array:
    """'VALID' grouped cross-correlation as a sum of shifted multiply-adds (one fused XLA loop).

    Args:
      x: [B, H + kh - 1 + 2 offset, W + kw - 1 + 2 offset, Cin], already padded; the conv reads the
        window ``x[:, offset:-offset, offset:-offset]`` (so convs of several sizes can read one
        padded copy, see ``SHARED_PAD``).
      kernel: [kh, kw, Cin/groups, Cout]; output channel o belongs to group o // (Cout/groups) and
        reads that group's Cin/groups input channels (PyTorch's and lax's grouping).
      groups: the number of feature groups.
      offset: the margin of x the conv does not read.
    Returns:
      [B, H, W, Cout].

    Costs kh*kw*(Cin/groups)*Cout multiply-adds per pixel, so it only pays off when that is small
    (depthwise, narrow grouped and narrow dense convs; see ``SHIFTED_MAX_MACS``). For groups > 1 the
    input gradient is again a shifted sum and the kernel gradient goes through
    :func:`kernel_grad_fft`; for groups == 1 both come from lax's transposes.
    """
    return _conv_shifted_impl(x, kernel, groups, offset)


def _conv_shifted_fwd(x, kernel, groups, offset):
    return _conv_shifted_impl(x, kernel, groups, offset), (x, kernel)


def _conv_shifted_bwd(groups, offset, res, g):
    x, kernel = res
    if offset:
        x = x[:, offset:x.shape[1] - offset, offset:x.shape[2] - offset]
    dx, dk = _conv_window_grads(groups, x, kernel, g)
    if offset:
        dx = jnp.pad(dx, ((0, 0), (offset, offset), (offset, offset), (0, 0)))
    return dx, dk


def _conv_window_grads(groups, x, kernel, g):
    """(dx, dk) of the 'VALID' conv of the window x [B, H+kh-1, W+kw-1, Cin] with cotangent g."""
    if groups == 1:
        # Narrow dense convs (e.g. 3 -> 1): lax's own transposes are fast enough here.
        return jax.vjp(lambda x_, k_: conv_lax(x_, k_, 1), x, kernel)[1](g)
    kh, kw, cin_g, cout = kernel.shape
    out_g = cout // groups
    # The input gradient is the full correlation of g with the flipped kernel, whose in/out roles
    # are swapped within each group: again a shifted sum (autodiff of the forward loop gives a
    # chain of pads and adds that XLA fuses poorly).
    flipped = kernel[::-1, ::-1].reshape(kh, kw, cin_g, groups, out_g)
    transposed = flipped.transpose(0, 1, 4, 3, 2).reshape(kh, kw, out_g, groups * cin_g)
    g_full = jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    dx = _conv_shifted_impl(g_full, transposed.astype(g.dtype), groups).astype(x.dtype)
    dk = kernel_grad_fft(x, g, kh, kw, groups).astype(kernel.dtype)
    return dx, dk


conv_shifted.defvjp(_conv_shifted_fwd, _conv_shifted_bwd)


# Dense convs with at most this many multiply-adds per pixel (kh*kw*Cin*Cout) also run as shifted
# sums under 'fast': at 512^2 on CPU a 3->1 3x3 conv takes 0.9 ms that way against 19 ms in lax,
# a 3->8 one 1.8 ms against 19 ms; from 8->8 (576) on, lax is as fast or faster.
SHIFTED_MAX_MACS = 216


def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *, groups: int = 1,
           padding: Padding = "zero", impl: str = "auto") -> jax.Array:
    """'Same'-size conv with stride 1, odd kernels, PyTorch semantics.

    Args:
      x: [B, H, W, Cin].
      kernel: [kh, kw, Cin/groups, Cout] (HWIO).
      bias: [Cout] or None.
      groups: feature groups (Cin for depthwise).
      padding: 'zero' (PyTorch default) or 'edge' (PyTorch 'replicate'), kh//2 on each side.
      impl: 'fast' runs grouped/depthwise convs and narrow dense convs (``SHIFTED_MAX_MACS``) as
        shifted sums and 1x1 convs as a matmul; 'lax' uses ``lax.conv_general_dilated`` for
        everything but 1x1 convs; 'auto' picks by backend.
    Returns:
      [B, H, W, Cout].
    """
    kh, kw, _, cout = kernel.shape
    impl = resolve_impl(impl)
    if kh == 1 and kw == 1 and groups == 1:
        y = jnp.einsum("bhwi,io->bhwo", x, kernel[0, 0])
    else:
        if impl == "fast" and (groups > 1 or kernel.size <= SHIFTED_MAX_MACS):
            xp, offset = _pad_shared(x, kh, kw, padding)
            y = conv_shifted(xp, kernel, groups, offset)
        else:
            y = conv_lax(pad_same(x, kh, kw, padding), kernel, groups)
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return y


# The shifted-sum convs of square kernels pad their input by at least this much and read the window
# they need, so that convs of different sizes on one tensor (the MRU's 3x3 and 5x5 depthwise pairs
# on P and on X) share one padded copy: XLA materialises each pad (merging identical ones), and a
# slice of a pad would be simplified back into a pad of its own. In the memory-lean inference path
# at 2048^2 this takes a block's temporaries from 1.67 to 1.41 GB.
SHARED_PAD = 2


def _pad_shared(x: jax.Array, kh: int, kw: int, mode: Padding) -> tuple[jax.Array, int]:
    """(xp, offset): x padded by max(SHARED_PAD, k//2), and the margin beyond the k//2 a kh x kw
    conv needs (0 for non-square kernels, padded exactly)."""
    if kh != kw or kh // 2 >= SHARED_PAD:
        return pad_same(x, kh, kw, mode), 0
    return pad_same(x, 2 * SHARED_PAD + 1, 2 * SHARED_PAD + 1, mode), SHARED_PAD - kh // 2


def _fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (sizes the FFT handles fastest)."""
    best = 1 << max(0, math.ceil(math.log2(max(n, 1))))
    p5 = 1
    while p5 < 2 * n:
        p35 = p5
        while p35 < 2 * n:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def blur_masks(mask: jax.Array, kernels: jax.Array, impl: str = "auto") -> tuple[jax.Array, jax.Array]:
    """The RDM's region weights for several blocks at once.

    Every block k has its own learnable single-channel kernel G_k, applied with zero padding so that
    the output keeps the input's size:  m_u[k] = G_k * M  and  m_o[k] = G_k * (1 - M).

    Args:
      mask: [B, H, W, 1], the exposure mask M.
      kernels: [K, kh, kw], one kernel per block (odd sizes).
      impl: 'fast' computes the K blurs of M exactly through one real FFT of M (sizes padded so
        there is no wrap-around) and G_k * 1 from the kernel's in-bounds sums, 'lax' all 2K blurs
        through ``lax.conv_general_dilated``; 'auto' picks by backend.
    Returns:
      (m_u, m_o), each [K, B, H, W, 1].
    """
    impl = resolve_impl(impl)
    nk, kh, kw = kernels.shape
    b, h, w, _ = mask.shape
    kernels = kernels.astype(mask.dtype)
    if impl == "lax":
        hwio = jnp.transpose(kernels, (1, 2, 0))[:, :, None, :]          # [kh, kw, 1, K]
        both = jnp.concatenate([mask, 1.0 - mask], axis=0)               # [2B, H, W, 1]
        out = conv_lax(pad_same(both, kh, kw), hwio)                     # [2B, H, W, K]
        out = jnp.moveaxis(out, -1, 0)[..., None]                        # [K, 2B, H, W, 1]
        return out[:, :b], out[:, b:]
    # Linear convolution by FFT: full size (H + kh - 1, W + kw - 1), then the centred 'same' window.
    # Cross-correlation = convolution with the flipped kernel.
    fh, fw = _fft_size(h + kh - 1), _fft_size(w + kw - 1)
    spec = jnp.fft.rfft2(mask[..., 0], s=(fh, fw))                      # [B, fh, fw//2+1]
    kspec = jnp.fft.rfft2(kernels[:, ::-1, ::-1], s=(fh, fw))           # [K, fh, fw//2+1]
    full = jnp.fft.irfft2(spec[None] * kspec[:, None], s=(fh, fw))      # [K, B, fh, fw]
    ph, pw = kh // 2, kw // 2
    m_u = full[..., ph:ph + h, pw:pw + w]                               # [K, B, H, W]
    m_o = _blur_of_ones(kernels, h, w)[:, None] - m_u                   # G*(1-M) = G*1 - G*M
    return m_u[..., None].astype(mask.dtype), m_o[..., None].astype(mask.dtype)


def _blur_of_ones(kernels: jax.Array, h: int, w: int) -> jax.Array:
    """G_k * 1 [K, H, W] (zero padding): at (y, x), the sum of the kernel taps that land inside the
    image, i.e. rows(y) @ G_k @ cols(x) with 0/1 matrices of the valid taps (two small matmuls; no
    FFT of a constant image)."""
    _, kh, kw = kernels.shape
    ph, pw = kh // 2, kw // 2
    rows = (0 <= np.arange(h)[:, None] + np.arange(kh)[None] - ph) & \
           (np.arange(h)[:, None] + np.arange(kh)[None] - ph < h)                      # [H, kh]
    cols = (0 <= np.arange(w)[None] + np.arange(kw)[:, None] - pw) & \
           (np.arange(w)[None] + np.arange(kw)[:, None] - pw < w)                      # [kw, W]
    rows, cols = (jnp.asarray(a, kernels.dtype) for a in (rows, cols))
    return jnp.einsum("yi,kij,jx->kyx", rows, kernels, cols, precision=lax.Precision.HIGHEST)


def gaussian_kernel(size: int = 31, std: float = 3.0) -> np.ndarray:
    """The official blur init: outer(g, g) / sum, g[n] = exp(-(n - size//2)^2 / (2 std^2)).

    Returns a float32 [size, size] array (scipy.signal.windows.gaussian(size, std) outer product,
    normalised to sum 1).
    """
    n = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * (n / std) ** 2)
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)
