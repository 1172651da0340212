"""The fast layer primitives equal the plain lax convolutions, forward and gradient."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from recnet_jax.model import layers

RNG = np.random.default_rng(0)


def _rand(*shape):
    return jnp.asarray(RNG.normal(size=shape), jnp.float32)


@pytest.mark.parametrize("cin,cout,k,groups", [
    (16, 16, 3, 16),   # MRU depthwise 3x3 on the projection
    (16, 16, 5, 16),   # depthwise 5x5
    (16, 8, 3, 8),     # grouped 3x3, two inputs per output (dwconv3x3_1)
    (16, 8, 5, 8),     # grouped 5x5 (dwconv5x5_1)
    (6, 4, 3, 2),      # general grouping: 3 inputs, 2 outputs per group
    (3, 1, 3, 1),      # narrow dense: the RDM gates
    (3, 8, 3, 1),      # narrow dense: the stem
])
def test_shifted_conv_equals_lax_forward_and_gradient(cin, cout, k, groups):
    x = _rand(2, 9 + k - 1, 11 + k - 1, cin)      # already padded ('VALID' conv)
    w = _rand(k, k, cin // groups, cout)
    g = _rand(2, 9, 11, cout)

    def loss(fn):
        return lambda x, w: jnp.sum(fn(x, w, groups) * g)

    np.testing.assert_allclose(layers.conv_shifted(x, w, groups), layers.conv_lax(x, w, groups),
                               atol=2e-5, rtol=1e-5)
    fast = jax.jit(jax.grad(loss(layers.conv_shifted), (0, 1)))(x, w)
    plain = jax.jit(jax.grad(loss(layers.conv_lax), (0, 1)))(x, w)
    for a, b in zip(fast, plain):
        scale = float(jnp.abs(b).max())
        assert float(jnp.abs(a - b).max()) <= 1e-5 * scale, (a.shape, scale)


@pytest.mark.parametrize("cin,cout,groups", [(16, 16, 16), (16, 8, 8), (3, 1, 1)])
def test_shifted_conv_with_an_offset_reads_the_inner_window(cin, cout, groups):
    """A 3x3 conv reading a copy padded for 5x5 (layers.SHARED_PAD): forward and gradients equal lax
    on the window, and the margin it does not read gets a zero gradient."""
    x = _rand(2, 13, 15, cin)
    w = _rand(3, 3, cin // groups, cout)
    g = _rand(2, 9, 11, cout)
    inner = lambda a: a[:, 1:-1, 1:-1]
    np.testing.assert_allclose(layers.conv_shifted(x, w, groups, 1),
                               layers.conv_lax(inner(x), w, groups), atol=2e-5, rtol=1e-5)
    fast = jax.grad(lambda x, w: jnp.sum(layers.conv_shifted(x, w, groups, 1) * g), (0, 1))(x, w)
    plain = jax.grad(lambda x, w: jnp.sum(layers.conv_lax(inner(x), w, groups) * g), (0, 1))(x, w)
    for a, b in zip(fast, plain):
        assert float(jnp.abs(a - b).max()) <= 1e-5 * float(jnp.abs(b).max())
    assert float(jnp.abs(fast[0]).sum()) > 0 and float(jnp.abs(fast[0][:, 0]).max()) == 0.0


@pytest.mark.parametrize("padding", ["zero", "edge"])
def test_conv2d_impls_agree_and_padding_is_pytorch(padding):
    x = _rand(1, 7, 10, 8)
    w = _rand(3, 3, 8, 8)
    b = _rand(8)
    fast = layers.conv2d(x, w, b, padding=padding, impl="fast")
    plain = layers.conv2d(x, w, b, padding=padding, impl="lax")
    np.testing.assert_allclose(fast, plain, atol=1e-5)
    # Reference: explicit numpy padding then a direct cross-correlation.
    mode = "edge" if padding == "edge" else "constant"
    xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), mode=mode)
    ref = np.zeros((1, 7, 10, 8))
    for i in range(3):
        for j in range(3):
            ref += np.einsum("bhwi,io->bhwo", xp[:, i:i + 7, j:j + 10], np.asarray(w[i, j]))
    np.testing.assert_allclose(plain, ref + np.asarray(b), atol=1e-4)


def test_one_by_one_conv_is_a_matmul():
    x, w, b = _rand(2, 5, 6, 16), _rand(1, 1, 16, 8), _rand(8)
    np.testing.assert_allclose(layers.conv2d(x, w, b, impl="fast"),
                               layers.conv_lax(x, w) + b, atol=1e-5)


@pytest.mark.parametrize("h,w", [(16, 24), (37, 53)])
def test_fft_blur_equals_lax_conv_forward_and_gradient(h, w):
    mask = jnp.asarray(RNG.uniform(size=(2, h, w, 1)), jnp.float32)
    # Asymmetric, unnormalised kernels with negative taps: a flip or transpose would show.
    kernels = jnp.asarray(layers.gaussian_kernel(31, 3.0)[None] * RNG.uniform(0.5, 1.5, (3, 31, 31))
                          - 1e-4, jnp.float32)
    fast = layers.blur_masks(mask, kernels, "fast")
    plain = layers.blur_masks(mask, kernels, "lax")
    for a, b in zip(fast, plain):
        assert a.shape == (3, 2, h, w, 1)
        np.testing.assert_allclose(a, b, atol=2e-6)
    # m_o is the blur of (1 - M): check it independently of the G*1 - G*M identity.
    direct = layers.conv_lax(layers.pad_same(1.0 - mask, 31, 31), kernels[1][:, :, None, None])
    np.testing.assert_allclose(fast[1][1], direct, atol=2e-6)

    weights = jnp.asarray(RNG.normal(size=(2, 3, 2, h, w, 1)), jnp.float32)

    def loss(impl):
        return lambda m, k: sum(jnp.sum(a * wt) for a, wt in zip(layers.blur_masks(m, k, impl), weights))

    gf = jax.jit(jax.grad(loss("fast"), (0, 1)))(mask, kernels)
    gl = jax.jit(jax.grad(loss("lax"), (0, 1)))(mask, kernels)
    for a, b in zip(gf, gl):
        assert float(jnp.abs(a - b).max()) <= 1e-5 * float(jnp.abs(b).max())


def test_gaussian_init_matches_the_release(fixture_path):
    ref = np.load(fixture_path("official_recnet_parity_a.npz"))["init/blur_kernel_gaussian31_std3"]
    np.testing.assert_allclose(layers.gaussian_kernel(31, 3.0), ref[0, 0], atol=1e-9, rtol=1e-6)


def test_resolve_impl():
    assert layers.resolve_impl("auto", "cpu") == "fast"
    assert layers.resolve_impl("auto", "gpu") == "lax"
    assert layers.resolve_impl("lax", "cpu") == "lax"
    with pytest.raises(ValueError, match="conv_impl"):
        layers.resolve_impl("cuda")
