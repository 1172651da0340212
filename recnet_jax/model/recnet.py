"""RECNet: stem, exposure mask predictor (EMP), region-aware blocks, aggregation, refine head.

    F0  = stem(I)                                   [B,H,W,nc]
    M   = EMP(F0)                                   [B,H,W,1], sigmoid, shared by every block
    X_k = RMB_k(X_{k-1}, M), X_0 = F0               [B,H,W,nc], k = 1..num_blocks
    R   = Refine(aggregate([X_1, ..., X_K]))        [B,H,W,3]
    out = clip(R + 1e-5, 0, 1)

Full resolution everywhere; any H x W works. See ``docs/model.md`` for the module-by-module map onto
the official PyTorch code and ``recnet_jax/convert.py`` for its state_dict.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from recnet_jax.model import conv as conv_lib, layers, remat as remat_lib
from recnet_jax.model.conv import Conv
from recnet_jax.model.mru import MixedScaleRestoration
from recnet_jax.model.rdm import NORM_VARIANTS, RegionAwareDeExposure


@struct.dataclass
class RECNetOutput:
    """What RECNet returns (a pytree, so it passes through ``jax.jit``).

    Attributes:
      image: [B,H,W,3] float32, the corrected image in [0, 1].
      mask: [B,H,W,1] float32, the exposure mask M in (0, 1) (1 = under-exposed, needs brightening).
      stem: [B,H,W,nc], the stem features F0.
      features: tuple of num_blocks arrays [B,H,W,nc], the outputs X_1..X_K of the blocks.
    """

    image: jax.Array
    mask: jax.Array
    stem: jax.Array
    features: tuple[jax.Array, ...]


class ExposureMaskPredictor(nnx.Module):
    """EMP: four 3x3 convs with replicate (edge) padding, ReLU between, sigmoid at the end.
    [B,H,W,nc] -> M [B,H,W,1]."""

    def __init__(self, nc: int = 8, *, impl: str = "auto", dtype=None, rngs: nnx.Rngs):
        conv = dict(padding="edge", impl=impl, dtype=dtype, rngs=rngs)
        self.convs = nnx.List([Conv(nc, nc, 3, **conv), Conv(nc, nc, 3, **conv),
                               Conv(nc, nc, 3, **conv), Conv(nc, 1, 3, **conv)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.convs[:-1]:
            x = jax.nn.relu(conv(x))
        return jax.nn.sigmoid(layers.wide(self.convs[-1](x)))


class RegionAwareBlock(nnx.Module):
    """RMB: RDM then MRU. Call ``(x [B,H,W,nc], m_u, m_o [B,H,W,1]) -> [B,H,W,nc]``."""

    def __init__(self, nc: int = 8, *, num_heads: int = 2, blur_size: int = 31,
                 norm_variant: str = "paper", norm_eps: float = 1e-5, impl: str = "auto",
                 dtype=None, rngs: nnx.Rngs):
        self.rdm = RegionAwareDeExposure(nc, blur_size=blur_size, norm_variant=norm_variant,
                                         norm_eps=norm_eps, impl=impl, dtype=dtype, rngs=rngs)
        self.mru = MixedScaleRestoration(nc, num_heads=num_heads, impl=impl, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, m_u: jax.Array, m_o: jax.Array) -> jax.Array:
        return self.mru(self.rdm(x, m_u, m_o), x)


class Refine(nnx.Module):
    """Refine head: conv_in, the release's channel-attention layer (it adds the attention-weighted
    pooled vector, it does not rescale the features), conv_last. [B,H,W,nc] -> [B,H,W,3]."""

    def __init__(self, nc: int = 8, *, impl: str = "auto", dtype=None, rngs: nnx.Rngs):
        conv = dict(impl=impl, dtype=dtype, rngs=rngs)
        reduced = max(nc // 4, 1)
        self.conv_in = Conv(nc, nc, 3, **conv)
        self.ca_conv1 = Conv(nc, nc, 3, **conv)
        self.ca_conv2 = Conv(nc, nc, 3, **conv)
        self.ca_down = Conv(nc, reduced, 1, **conv)
        self.ca_up = Conv(reduced, nc, 1, **conv)
        self.conv_last = Conv(nc, 3, 3, **conv)

    def __call__(self, x: jax.Array) -> jax.Array:
        r0 = self.conv_in(x)
        t = self.ca_conv2(jax.nn.relu(self.ca_conv1(r0)))
        t = jnp.mean(layers.wide(t), axis=(1, 2), keepdims=True).astype(r0.dtype)
        w = jax.nn.sigmoid(self.ca_up(jax.nn.relu(self.ca_down(t))))
        return self.conv_last(r0 + w * t)


def check_images(images) -> None:
    """Raises ValueError unless ``images`` is a float [B,H,W,3] array."""
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            f"RECNet expects images of shape [B, H, W, 3] (NHWC, RGB, float in [0, 1]); got shape "
            f"{shape}. Add a batch axis with images[None] or move channels last with "
            "images.transpose(0, 2, 3, 1).")
    if shape[1] < 1 or shape[2] < 1:
        raise ValueError(f"RECNet expects a non-empty image, got shape {shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"RECNet expects float images in [0, 1], got dtype {images.dtype}; "
                         "convert uint8 with images.astype('float32') / 255.")


class RECNet(nnx.Module):
    """Region-aware Exposure Consistency Network (Flax NNX, NHWC).

    Args:
      nc: feature channels (8 in the release).
      num_blocks: region-aware blocks (5).
      num_heads: heads of the MRU channel attention (2); must divide nc.
      blur_size: side of each block's learnable mask blur kernel (31, odd).
      norm_variant: 'paper' (region-aware masked-moment normalisation, the default) or 'official'
        (plain instance norm of the mask-weighted, gated features, bit-compatible with the release).
        Both have the same parameters.
      norm_eps: epsilon of the normalisation (1e-5 as in the release).
      conv_impl: 'auto' (shifted sums + FFT on CPU, plain lax convs on GPU/TPU), 'fast' or 'lax'.
      dtype: compute dtype of the convolutions (None = float32, or float64 for float64 images
        under ``jax_enable_x64``, used for float64 reference gradients). Parameters stay float32;
        the attention logits, the normalisation statistics and the outputs are at least float32.
      remat: rematerialise each region-aware block in the backward pass (saves only the blocks'
        inputs; see :mod:`recnet_jax.model.remat`). The same values and gradients; a training
        option, not part of the architecture. At 8 x 256^2 on CPU it cuts the training step's
        temporaries from 5.2 GB to 1.3 GB and makes the step faster, not slower.
      rngs: ``nnx.Rngs``; initialisation follows PyTorch's defaults (see ``Conv``), all draws made
        together (``conv.batched_draws``: the same values, a fast compile under ``jax.jit``).

    Call: ``model(images)`` with images float [B,H,W,3] in [0, 1] -> :class:`RECNetOutput`.
    Values outside [0, 1] are not clipped on the way in (the network extrapolates; the output is
    still clamped to [0, 1]). A NaN anywhere in an image makes that image's whole output NaN (the
    per-image statistics spread it); other images of the batch are unaffected.
    """

    def __init__(self, nc: int = 8, num_blocks: int = 5, num_heads: int = 2, blur_size: int = 31,
                 norm_variant: str = "paper", *, norm_eps: float = 1e-5, conv_impl: str = "auto",
                 dtype=None, remat: bool = False, rngs: nnx.Rngs | None = None):
        if norm_variant not in NORM_VARIANTS:
            raise ValueError(f"norm_variant must be one of {NORM_VARIANTS}, got {norm_variant!r}")
        layers.resolve_impl(conv_impl)  # validates the name
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        conv = dict(impl=conv_impl, dtype=dtype, rngs=rngs)
        with conv_lib.batched_draws(lambda: self):   # the same values; a fast compile under jit
            self.stem = Conv(3, nc, 3, **conv)
            self.emp = ExposureMaskPredictor(nc, **conv)
            self.blocks = nnx.List([
                RegionAwareBlock(nc, num_heads=num_heads, blur_size=blur_size,
                                 norm_variant=norm_variant, norm_eps=norm_eps, **conv)
                for _ in range(num_blocks)])
            self.aggregate = Conv(num_blocks * nc, nc, 1, **conv)
            self.refine = Refine(nc, **conv)
        self.nc, self.num_blocks, self.num_heads, self.blur_size = nc, num_blocks, num_heads, blur_size
        self.norm_variant, self.norm_eps = norm_variant, norm_eps
        self.conv_impl, self.dtype, self.remat = conv_impl, dtype, remat

    def __call__(self, images: jax.Array) -> RECNetOutput:
        check_images(images)
        images = layers.wide(images)
        dtype = self.dtype or images.dtype
        f0 = layers.materialize(self.stem(images), self.conv_impl)
        mask = self.emp(f0)
        kernels = jnp.stack([blk.rdm.blur_kernel[...] for blk in self.blocks])
        m_u, m_o = layers.blur_masks(mask, kernels, self.conv_impl)        # [K,B,H,W,1] each
        x = f0
        features = []
        for k, block in enumerate(self.blocks):
            x = self._call_block(block, x, m_u[k].astype(dtype), m_o[k].astype(dtype))
            features.append(x)
        r = self.refine(self.aggregate(jnp.concatenate(features, -1)))
        image = jnp.clip(layers.wide(r) + 1e-5, 0.0, 1.0)
        return RECNetOutput(image=image, mask=mask, stem=layers.wide(f0),
                            features=tuple(layers.wide(f) for f in features))

    def _call_block(self, block: RegionAwareBlock, *args: jax.Array) -> jax.Array:
        if not self.remat:
            return block(*args)
        graphdef, state = nnx.split(block)
        return remat_lib.rematerialized(lambda st, *a: nnx.merge(graphdef, st)(*a))(state, *args)

    def config(self) -> dict:
        """The constructor arguments that rebuild this architecture (for checkpoints and logs)."""
        return dict(nc=self.nc, num_blocks=self.num_blocks, num_heads=self.num_heads,
                    blur_size=self.blur_size, norm_variant=self.norm_variant, norm_eps=self.norm_eps)
