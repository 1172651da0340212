"""Exposure contrastive regularization (ECR, the release's ``EXCloss``), reference §7.6.

With ``P`` a 4x4/4 max pool (VALID, floor), ``phi`` the frozen VGG16 relu4_3 features, ``M`` the predicted
mask (the under-exposed region) and its complement taken **after** pooling, ``1 - P(M)``:

* anchors ``f_f = phi(P(out) * P(M))``, ``f_b = phi(P(out) * (1 - P(M)))``;
* positives ``g_f+``, ``g_b+``: the same with the target; negatives ``l_f-``, ``l_b-``: with the input;
* ``D(a, b)`` = mean |a - b| over the whole batch (one scalar);
* intra-region: ``L_ss = D(f_f, g_f+) / (D(f_f, g_f+) + D(l_f-, g_f+) + 1e-8) + (the same for b)``;
* inter-region: ``G(a, b)[n] = A_n^T B_n`` with ``A_n`` = sample n's features as ``[h*w, 512]``
  (a spatial ``(h*w) x (h*w)`` correlation, unnormalised), ``c = G(f_f, f_b)``, ``c+ = G(g_f+, g_b+)``,
  ``c- = G(l_f-, l_b-)``, and ``L_cs = D(c, c+) / (D(c, c+) + D(c, c-) + 1e-8)``;
* ``L_ECR = L_ss + L_cs``.

The mask is **not** detached: gradients reach M through all six feature maps, and the output image through
the two anchors. No gradient reaches the VGG weights, the input or the target.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

ECR_EPS = 1e-8
POOL = 4
FEATURE_NAMES = ("f_f", "f_b", "g_f_plus", "g_b_plus", "l_f_minus", "l_b_minus")


def max_pool4(x: jax.Array) -> jax.Array:
    """4x4 max pool with stride 4, VALID (floor): ``[B, H, W, C]`` -> ``[B, H // 4, W // 4, C]``."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, POOL, POOL, 1), (1, POOL, POOL, 1), "VALID")


def spatial_correlation(a: jax.Array, b: jax.Array) -> jax.Array:
    """The release's "gram": ``G[n] = A_n^T B_n`` over channels, at HIGHEST precision.

    Args:
      a: ``[B, h, w, C]``.
      b: ``[B, h, w, C]``.
    Returns:
      ``[B, h*w, h*w]`` (row-major spatial flattening).
    """
    bsz, h, w, c = a.shape
    return jnp.einsum(
        "bnc,bmc->bnm", a.reshape(bsz, h * w, c), b.reshape(bsz, h * w, c), precision=lax.Precision.HIGHEST
    )


def _mad(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean(jnp.abs(a - b))


def ecr_terms(
    image: jax.Array,
    mask: jax.Array,
    inputs: jax.Array,
    target: jax.Array,
    vgg: Callable[[jax.Array], jax.Array],
) -> dict[str, jax.Array]:
    """The ECR and its internals.

    The six VGG inputs are evaluated in one VGG call, stacked sample-major (``[B, 6, ...]`` flattened to
    ``[6B, ...]``) so that a batch sharded over devices stays sharded the same way.

    Args:
      image: ``[B, H, W, 3]`` network output.
      mask: ``[B, H, W, 1]`` predicted mask M (probability of under-exposure).
      inputs: ``[B, H, W, 3]`` network input.
      target: ``[B, H, W, 3]`` ground truth.
      vgg: feature extractor ``[N, h, w, 3]`` -> ``[N, h', w', C]``, e.g. :class:`~recnet_jax.losses.vgg.VGG16Features`.
    Returns:
      dict with scalars ``ecr`` (= ``intra`` + ``inter``), ``intra`` (L_ss), ``inter`` (L_cs); the VGG inputs
      ``in_<name>`` ``[B, H//4, W//4, 3]`` and features ``<name>`` ``[B, h', w', C]`` for name in
      ``FEATURE_NAMES``; and ``gram_c``, ``gram_c_plus``, ``gram_c_minus`` ``[B, h'w', h'w']``.
    """
    if image.ndim != 4 or mask.shape != image.shape[:3] + (1,):
        raise ValueError(
            f"ecr_terms expects image [B, H, W, 3] and mask [B, H, W, 1], got {image.shape}, {mask.shape}"
        )
    if image.shape[1] < 8 * POOL or image.shape[2] < 8 * POOL:
        raise ValueError(
            f"ecr_terms needs H, W >= {8 * POOL} (4x pooling, then VGG's 8x), got {image.shape[1:3]}"
        )
    p_out, p_gt, p_in = max_pool4(image), max_pool4(target), max_pool4(inputs)
    p_m = max_pool4(mask)
    p_mc = 1.0 - p_m  # complement after pooling, as the release does
    vgg_in = jnp.stack([p_out * p_m, p_out * p_mc, p_gt * p_m, p_gt * p_mc, p_in * p_m, p_in * p_mc], axis=1)
    bsz = vgg_in.shape[0]
    feats = vgg(vgg_in.reshape((bsz * 6,) + vgg_in.shape[2:]))
    feats = feats.reshape((bsz, 6) + feats.shape[1:])
    f_f, f_b, g_fp, g_bp, l_fm, l_bm = (feats[:, i] for i in range(6))

    d_f_pos = _mad(f_f, g_fp)
    d_b_pos = _mad(f_b, g_bp)
    intra = d_f_pos / (d_f_pos + _mad(l_fm, g_fp) + ECR_EPS) + d_b_pos / (
        d_b_pos + _mad(l_bm, g_bp) + ECR_EPS
    )

    c = spatial_correlation(f_f, f_b)
    c_plus = spatial_correlation(g_fp, g_bp)
    c_minus = spatial_correlation(l_fm, l_bm)
    d_c_pos = _mad(c, c_plus)
    inter = d_c_pos / (d_c_pos + _mad(c, c_minus) + ECR_EPS)

    out = {
        "ecr": intra + inter,
        "intra": intra,
        "inter": inter,
        "gram_c": c,
        "gram_c_plus": c_plus,
        "gram_c_minus": c_minus,
    }
    for i, name in enumerate(FEATURE_NAMES):
        out["in_" + name] = vgg_in[:, i]
        out[name] = feats[:, i]
    return out


def ecr_loss(
    image: jax.Array,
    mask: jax.Array,
    inputs: jax.Array,
    target: jax.Array,
    vgg: Callable[[jax.Array], jax.Array],
) -> jax.Array:
    """``L_ECR = L_ss + L_cs`` (see the module docstring); shapes as :func:`ecr_terms`. Returns a scalar."""
    return ecr_terms(image, mask, inputs, target, vgg)["ecr"]
