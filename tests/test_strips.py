"""The strip-tiled block of the lean inference path equals the whole-image block."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import recnet_jax
from recnet_jax import strips
from recnet_jax.model import layers


@pytest.mark.parametrize("height,rows,halo", [(37, 8, 6), (40, 8, 4), (9, 8, 1), (12, 8, 2),
                                              (100, 16, 6), (17, 16, 1)])
def test_strip_plan_covers_every_row_once_within_its_halo(height, rows, halo):
    size, r, plan = strips.plan(height, rows, halo)
    counted = np.zeros(height, int)
    for s in plan:
        assert 0 <= s.start and s.start + size <= height
        assert s.start <= s.out and s.out + r <= s.start + size
        assert s.out <= s.lo < s.hi <= s.out + r
        counted[s.lo:s.hi] += 1
        # Result rows lie a full halo inside the strip, except where the strip meets the image edge.
        assert s.start == 0 or s.out - s.start >= halo
        assert s.start + size == height or s.start + size - (s.out + r) >= halo
    assert (counted == 1).all()


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("rows", [8, 64])
def test_strip_block_equals_the_whole_image_block(variant, rows):
    model = recnet_jax.RECNet(num_blocks=1, norm_variant=variant, rngs=nnx.Rngs(5))
    blk = model.blocks[0]
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 37, 21, 8)), jnp.float32)
    mask = jnp.asarray(rng.random((2, 37, 21, 1)), jnp.float32)
    acc = jnp.asarray(rng.normal(size=(2, 37, 21, 8)), jnp.float32)
    w_k = jnp.asarray(rng.normal(size=(8, 8)), jnp.float32)
    kernel = blk.rdm.blur_kernel[...]
    m_u, m_o = layers.blur_masks(mask, kernel[None], model.conv_impl)
    want = blk(x, m_u[0], m_o[0])
    want_acc = acc + jnp.einsum("bhwi,io->bhwo", want, w_k)
    y, acc2 = strips.block(blk, kernel, w_k, x, mask, jnp.array(acc), conv_impl=model.conv_impl,
                           rows=rows)
    np.testing.assert_allclose(np.asarray(y), np.asarray(want), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(acc2), np.asarray(want_acc), atol=2e-5, rtol=1e-5)
