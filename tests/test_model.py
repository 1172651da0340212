"""RECNet: parameter count, parity with the official PyTorch release, the paper variant, shapes,
jit/eager agreement and input checks."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import recnet_jax
from recnet_jax import convert, inference
from recnet_jax.model import conv as conv_lib, layers, mru, rdm

ATOL = 1e-5


def nhwc(a):
    return np.asarray(a).transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def official(parity):
    """The converted official model and its jitted functional apply."""
    model = convert.from_official({k: v for k, v in parity.items() if k.startswith("param/")})
    graphdef, state = nnx.split(model)
    apply = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    return model, state, apply


@pytest.fixture(scope="module")
def paper_model():
    return recnet_jax.RECNet(rngs=nnx.Rngs(0))


def test_official_configuration_has_38975_parameters():
    model = nnx.eval_shape(lambda: recnet_jax.RECNet(norm_variant="official", rngs=nnx.Rngs(0)))
    params = nnx.state(model, nnx.Param)
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) == 38_975
    assert len(jax.tree.leaves(params)) == 229 == len(convert.official_layout(5))


# XLA's default CPU compilation (tests/conftest.py compiles everything else at -O0 with the older
# fusion emitter): the code users run is held to the release too.
PRODUCTION = {"xla_backend_optimization_level": 3, "xla_cpu_use_fusion_emitters": True}


@pytest.mark.parametrize("impl", ["fast", "lax"])
def test_parity_with_the_official_release(parity, impl):
    model = convert.from_official({k: v for k, v in parity.items() if k.startswith("param/")},
                                  conv_impl=impl)
    assert model.norm_variant == "official" and model.nc == 8
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x),
                      compiler_options=PRODUCTION if impl == "fast" else None)
    out = forward(state, jnp.asarray(nhwc(parity["x"])))
    np.testing.assert_allclose(out.image, nhwc(parity["out"]), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out.mask, nhwc(parity["mask"]), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out.stem, nhwc(parity["x_pre"]), atol=ATOL, rtol=0)
    assert len(out.features) == 5
    for k, feat in enumerate(out.features):
        np.testing.assert_allclose(feat, nhwc(parity[f"feat{k + 1}"]), atol=ATOL, rtol=0)


def test_block_one_internals_match_the_release(parity, official):
    """Region weights, RDM output and attention logits of block 1 (pinpoints a wrong layer)."""
    model, _, _ = official
    x = jnp.asarray(nhwc(parity["x"]))
    f0 = model.stem(x)
    mask = model.emp(f0)
    m_u, m_o = layers.blur_masks(mask, model.blocks[0].rdm.blur_kernel[...][None])
    np.testing.assert_allclose(m_u[0], nhwc(parity["dbg/conv1.norm.blur_mask"]), atol=ATOL)
    np.testing.assert_allclose(m_o[0], nhwc(parity["dbg/conv1.norm.blur_mask_comp"]), atol=ATOL)
    block = model.blocks[0]
    f_n = block.rdm(f0, m_u[0], m_o[0])
    np.testing.assert_allclose(f_n, nhwc(parity["dbg/conv1.norm_out"]), atol=ATOL)
    p = block.mru.project_in(f_n)
    for size, conv in [(3, block.mru.qk_dw3), (5, block.mru.qk_dw5)]:
        d = jax.nn.relu(conv(p))
        logits = mru.channel_attention_logits(d[..., :8], d[..., 8:], block.mru.temperature[...])
        ref = parity[f"dbg/conv1.attn{size}_logits"]
        np.testing.assert_allclose(logits, ref, atol=ATOL * np.abs(ref).max(), rtol=0)


class _ThreeConvs(nnx.Module):
    """Built as RECNet builds itself: inside ``conv.batched_draws``."""

    def __init__(self, rngs: nnx.Rngs):
        with conv_lib.batched_draws(lambda: self):
            self.convs = nnx.List([conv_lib.Conv(3, 4, 3, rngs=rngs),
                                   conv_lib.Conv(4, 4, 5, groups=2, rngs=rngs),
                                   conv_lib.Conv(4, 2, 1, use_bias=False, rngs=rngs)])


def test_batched_init_draws_the_values_of_one_draw_per_parameter(monkeypatch):
    """Initial parameters drawn through ``conv.batched_draws`` (a fast compile under jit): with
    threefry keys, bit for bit what one draw per parameter gives, jitted (as the trainer builds
    RECNet) and eager; and RECNet defers every conv weight and bias."""
    key = jax.random.key(3, impl="threefry2x32")   # the trainer's PRNG

    def init():   # a new function each time: jit's trace cache is per function
        return lambda: nnx.state(_ThreeConvs(nnx.Rngs(key)), nnx.Param)

    def flat(state):
        return {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(state)}

    fill, filled = conv_lib._fill, []
    monkeypatch.setattr(conv_lib, "_fill", lambda m, d: (filled.append(len(d)), fill(m, d)))
    batched = [flat(jax.jit(init())()), flat(init()())]
    nnx.eval_shape(lambda: recnet_jax.RECNet(num_blocks=1, rngs=nnx.Rngs(key)))
    assert filled == [5, 5, 24 + 36]
    monkeypatch.setattr(conv_lib, "batched_draws", lambda module_of: contextlib.nullcontext())
    single = flat(jax.jit(init())())
    assert len(single) == 5 and len({v.tobytes() for v in single.values()}) == 5
    for got in batched:
        assert got.keys() == single.keys()
        for name, value in single.items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_official_to_nnx_to_official_is_exact(parity, official):
    model, _, _ = official
    ref = convert.read_state_dict(parity)
    out = convert.to_official(model)
    assert list(out) == list(ref)   # the release's key order
    for key in ref:
        assert out[key].shape == ref[key].shape and np.array_equal(out[key], ref[key]), key


def test_variants_share_the_parameter_tree():
    def tree(variant):
        m = nnx.eval_shape(lambda: recnet_jax.RECNet(norm_variant=variant, rngs=nnx.Rngs(0)))
        return jax.tree.map(lambda p: p.shape, nnx.to_pure_dict(nnx.state(m, nnx.Param)))
    assert tree("paper") == tree("official")


def test_masked_statistics_equal_numpy():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(2, 7, 9, 8)).astype(np.float32)
    m = rng.uniform(size=(2, 7, 9, 1)).astype(np.float32)
    m[0, :3] = 0.0
    eps = 1e-5
    mu, var = rdm.masked_moments(jnp.asarray(y), jnp.asarray(m), eps)
    y64, m64 = y.astype(np.float64), m.astype(np.float64)
    denom = m64.sum(axis=(1, 2), keepdims=True) + eps
    mu_ref = (m64 * y64).sum(axis=(1, 2), keepdims=True) / denom
    var_ref = (m64 * (y64 - mu_ref) ** 2).sum(axis=(1, 2), keepdims=True) / denom
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, var_ref, rtol=1e-5, atol=1e-6)
    scale = rng.normal(size=8).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    z = rdm.masked_instance_norm(jnp.asarray(y), jnp.asarray(m), scale, bias, eps)
    np.testing.assert_allclose(z, m64 * (scale * (y64 - mu_ref) / np.sqrt(var_ref + eps) + bias),
                               rtol=1e-4, atol=1e-5)
    # With m = 1 it is the plain instance norm (denominator H*W + eps instead of H*W).
    ones = jnp.ones_like(jnp.asarray(m))
    np.testing.assert_allclose(rdm.masked_instance_norm(jnp.asarray(y), ones, scale, bias, eps),
                               rdm.instance_norm(jnp.asarray(y), scale, bias, eps), atol=1e-5)


def test_paper_branch_statistics_ignore_pixels_outside_the_region(paper_model):
    """Changing X where a branch's region weight is 0 leaves that branch's statistics unchanged
    (the gate at the region's pixels sees X * m, which is 0 there)."""
    rdm_module = paper_model.blocks[0].rdm
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.uniform(size=(1, 12, 14, 8)), jnp.float32)
    m = np.zeros((1, 12, 14, 1), np.float32)
    m[:, :6] = rng.uniform(0.2, 1.0, size=(1, 6, 14, 1))
    m = jnp.asarray(m)
    changed = x.at[:, 6:].set(jnp.asarray(rng.uniform(-3, 3, size=(1, 6, 14, 8)), jnp.float32))
    for branch in (0, 1):
        before = rdm.masked_moments(*rdm_module.gated(branch, x, m))
        after = rdm.masked_moments(*rdm_module.gated(branch, changed, m))
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)


def test_converted_checkpoint_loads_into_the_paper_variant(parity, official):
    _, _, apply = official
    paper = convert.from_official(parity, norm_variant="paper")
    assert paper.norm_variant == "paper"
    for a, b in zip(jax.tree.leaves(nnx.state(paper, nnx.Param)),
                    jax.tree.leaves(nnx.state(official[0], nnx.Param))):
        np.testing.assert_array_equal(a, b)
    x = jnp.asarray(nhwc(parity["x"]))
    image, _ = inference.predict(paper, x)   # jitted: eager mode compiles every op (about 15 s)
    assert float(jnp.abs(image - apply(official[1], x).image).max()) > 1e-3


@pytest.fixture(scope="module")
def odd_batch():
    rng = np.random.default_rng(3)
    return jnp.asarray(rng.uniform(size=(3, 37, 53, 3)), jnp.float32)


@pytest.fixture(scope="module")
def paper_apply(paper_model):
    graphdef, state = nnx.split(paper_model)
    return jax.jit(lambda x: nnx.merge(graphdef, state)(x))


def test_odd_sizes_jit_and_eager_agree(paper_model, paper_apply, odd_batch):
    """Batch 3 at 37 x 53. (Eager mode compiles every op for every shape: another batch size
    would add about 15 s; batch 1 is checked jitted below.)"""
    jitted = paper_apply(odd_batch)
    eager = paper_model(odd_batch)
    assert jitted.image.shape == (3, 37, 53, 3) and jitted.mask.shape == (3, 37, 53, 1)
    assert jitted.stem.shape == (3, 37, 53, 8)
    assert [f.shape for f in jitted.features] == [(3, 37, 53, 8)] * 5
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert 0.0 <= float(jitted.image.min()) and float(jitted.image.max()) <= 1.0


def test_images_of_a_batch_are_independent(paper_apply, odd_batch):
    whole = paper_apply(odd_batch)
    single = paper_apply(odd_batch[:1])
    assert single.image.shape == (1, 37, 53, 3) and single.mask.shape == (1, 37, 53, 1)
    assert [f.shape for f in single.features] == [(1, 37, 53, 8)] * 5
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(single)):
        np.testing.assert_allclose(a[:1], b, atol=1e-5, rtol=1e-5)


def test_nan_spreads_over_its_own_image_only(paper_apply, odd_batch):
    """The documented behaviour: a NaN pixel makes its image's output NaN, not its neighbours'."""
    out = paper_apply(odd_batch.at[1, 5, 7, 0].set(jnp.nan)).image
    assert bool(jnp.all(jnp.isnan(out[1])))
    assert not bool(jnp.any(jnp.isnan(out[0]))) and not bool(jnp.any(jnp.isnan(out[2])))


@pytest.mark.parametrize("shape,dtype", [((37, 53, 3), jnp.float32), ((1, 37, 53, 4), jnp.float32),
                                         ((1, 3, 37, 53), jnp.float32), ((1, 8, 8, 3), jnp.uint8)])
def test_bad_input_names_the_expected_shape(paper_model, shape, dtype):
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]|float images"):
        paper_model(jnp.zeros(shape, dtype))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="norm_variant"):
        recnet_jax.RECNet(norm_variant="masked")
    with pytest.raises(ValueError, match="conv_impl"):
        recnet_jax.RECNet(conv_impl="cudnn")


def test_bfloat16_compute_dtype_keeps_float32_outputs(parity):
    """Convs in bfloat16; the statistics, attention and outputs stay float32 and close to the release."""
    model = convert.from_official(parity, dtype=jnp.bfloat16)
    graphdef, state = nnx.split(model)
    out = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(nhwc(parity["x"])))
    assert out.image.dtype == out.mask.dtype == out.features[0].dtype == jnp.float32
    diff = np.abs(np.asarray(out.image) - nhwc(parity["out"]))
    assert diff.mean() < 5e-3 and diff.max() < 5e-2, (diff.mean(), diff.max())   # measured 1.4e-3, 1.3e-2


def test_fused_rdm_tail_equals_the_release_order(official, parity):
    """RDM.__call__ folds the tails, 1x1 fusions and alpha mix into one conv; ``unfused`` keeps the
    release's order of operations."""
    model, _, _ = official
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(1, 12, 17, 8)), jnp.float32)
    m_u = jnp.asarray(rng.uniform(size=(1, 12, 17, 1)), jnp.float32)
    rdm_module = model.blocks[2].rdm
    np.testing.assert_allclose(rdm_module(x, m_u, 1.0 - m_u), rdm_module.unfused(x, m_u, 1.0 - m_u),
                               atol=2e-5, rtol=1e-5)


def test_folded_mru_fusions_equal_the_release_order(official):
    """MRU.combine folds the attention, project_ch and the two 1x1 fusions into one per-image
    matmul; ``unfused_combine`` keeps the release's order. Forward and gradient."""
    model, _, _ = official
    rng = np.random.default_rng(5)
    f_n, f_s, x = (jnp.asarray(rng.normal(size=(2, 9, 13, 8)), jnp.float32) for _ in range(3))
    logits3, logits5 = (jnp.asarray(rng.normal(size=(2, 2, 4, 4)) * 5, jnp.float32) for _ in range(2))
    mru_module = model.blocks[1].mru
    args = (f_n, f_s, x, logits3, logits5)
    np.testing.assert_allclose(mru_module.combine(*args), mru_module.unfused_combine(*args),
                               atol=2e-5, rtol=1e-5)
    grad = lambda fn: jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))), argnums=(0, 1, 2, 3, 4))(*args)  # noqa: E731
    for g, g_ref in zip(grad(mru_module.combine), grad(mru_module.unfused_combine)):
        np.testing.assert_allclose(g, g_ref, atol=5e-5, rtol=1e-4)
