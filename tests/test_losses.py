"""The training objective against the official loss fixture (stored model outputs), dm_pix, the PyTorch
twin of the release's loss (recnet_jax.torch_twin) on another batch/size/weights, and a batch sharded
over 2 devices."""

import json
import os
import pathlib
import subprocess
import sys

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recnet_jax import losses

from _losses_util import (
    LOSS_FIXTURE,
    TERM_KEYS,
    TERM_RTOL,
    ImageMask,
    ecr_terms_jit,
    load_npz,
    nhwc,
    rel_err,
    tensor_err,
    terms_jit,
    vgg_mapping,
)

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fx(fixture_path):
    return load_npz(fixture_path(LOSS_FIXTURE))


@pytest.fixture(scope="module")
def vgg(fx):
    return losses.load_vgg16(vgg_mapping(fx))


@pytest.fixture(scope="module")
def batch(fx):
    """(ImageMask(out, mask), lq, gt), NHWC, from the fixture's stored official outputs."""
    return (
        ImageMask(jnp.asarray(nhwc(fx["out"])), jnp.asarray(nhwc(fx["mask"]))),
        jnp.asarray(nhwc(fx["lq"])),
        jnp.asarray(nhwc(fx["gt"])),
    )


@pytest.fixture(scope="module")
def terms(batch, vgg):
    return terms_jit(*batch, vgg)


@pytest.mark.parametrize("name", list(TERM_KEYS))
def test_term_matches_fixture(terms, fx, name):
    err = rel_err(terms[name], fx[TERM_KEYS[name]])
    assert (
        err <= TERM_RTOL[name]
    ), f"{name}: {float(terms[name])!r} vs {float(fx[TERM_KEYS[name]])!r}, rel {err:.2e}"


def test_ssim_term_is_negative_mean_ssim(terms, batch):
    out, _, gt = batch
    np.testing.assert_allclose(
        float(terms["ssim"]), -float(jnp.mean(losses.ssim_map(out.image, gt))), rtol=1e-6
    )
    assert -1.0 <= float(terms["ssim"]) < 0.0


def test_mask_target_matches_fixture(batch, fx):
    _, lq, gt = batch
    np.testing.assert_array_equal(np.asarray(losses.mask_target(lq, gt)), nhwc(fx["thres"]))


def test_ecr_internals_match_fixture(batch, vgg, fx):
    e = ecr_terms_jit(*batch, vgg)
    for name in losses.ecr.FEATURE_NAMES:
        np.testing.assert_allclose(
            np.asarray(e["in_" + name]), nhwc(fx["exc/in_" + name]), atol=1e-7, err_msg=name
        )
        assert tensor_err(e[name], nhwc(fx["exc/" + name])) < 2e-6, name
    for name in ("gram_c", "gram_c_plus", "gram_c_minus"):
        assert tensor_err(e[name], fx["exc/" + name]) < 2e-6, name
    # float64 recomputation in the reference (§11.3): L_ss = 0.803951, L_cs = 0.263623.
    np.testing.assert_allclose(float(e["intra"]), 0.803951, atol=2e-6)
    np.testing.assert_allclose(float(e["inter"]), 0.263623, atol=2e-6)


def test_ssim_map_interior_equals_dm_pix(batch):
    """Away from the border the zero-padded 'same' windows are dm_pix's 'valid' windows.

    In float64 with dm_pix's exactly normalised window the two agree to rounding. In float32 single pixels
    differ by up to ~2e-4 (the variance cancels) and the means by ~8e-6: dm_pix normalises its float32
    window differently (recnet_reference.md §11.8).
    """
    out, _, gt = batch
    with jax.enable_x64(True):
        x, y = jnp.asarray(out.image, jnp.float64), jnp.asarray(gt, jnp.float64)
        g = np.exp(-((np.arange(11) - 5.0) ** 2) / 4.5)
        ours = np.asarray(losses.ssim_map(x, y, taps=g / g.sum()))
        ref = np.asarray(dm_pix.ssim(x, y, return_map=True))  # [B, H-10, W-10, C]
    assert ours.dtype == ref.dtype == np.float64
    np.testing.assert_allclose(ours[:, 5:-5, 5:-5, :], ref, rtol=0, atol=1e-10)
    ours32 = np.asarray(jax.jit(losses.ssim_map)(out.image, gt))
    ref32 = np.asarray(dm_pix.ssim(out.image, gt, return_map=True))
    np.testing.assert_allclose(ours32[:, 5:-5, 5:-5].mean(), ref32.mean(), rtol=0, atol=2e-5)
    # The border is where the release's term differs from the evaluation SSIM.
    assert np.abs(ours32[:, :5].mean() - ref32[:, :5].mean()) > 1e-3


def test_gaussian_window_is_normalised_the_pytorch_way():
    g = losses.gaussian_window_1d()
    assert g.dtype == np.float32 and g.shape == (11,)
    taps = np.array([np.exp(-((n - 5) ** 2) / 4.5) for n in range(11)], np.float32)
    assert np.float32(np.sum(taps.astype(np.float64))) == np.float32(
        3.7592328
    )  # torch's correctly rounded sum
    np.testing.assert_array_equal(g, taps / np.float32(3.7592328))


def test_weights_are_configurable_and_skip_ecr(batch, vgg):
    out, lq, gt = batch
    w = {"l1": 0.5, "ssim": 2.0, "mask": 0.0, "color": 3.0, "ecr": 0.25}
    t = losses.loss_terms(out, lq, gt, vgg, w)  # eager; reuses no compile, but small
    expected = sum(w[k] * float(t[k]) for k in losses.TERMS)
    np.testing.assert_allclose(float(t["total"]), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown loss weight keys.*'ssim_loss'"):
        losses.loss_terms(out, lq, gt, vgg, {"ssim_loss": 0.1})

    def n_convs(weights, v):
        jaxpr = jax.make_jaxpr(lambda o, a, b: losses.loss_terms(o, a, b, v, weights)["total"])(out, lq, gt)
        return str(jaxpr).count("conv_general_dilated")

    assert n_convs(None, vgg) == 2 + 10  # SSIM's two separable passes + the ten VGG convs
    assert n_convs({"ecr": 0.0}, vgg) == 2
    assert n_convs(None, None) == 2
    skipped = losses.loss_terms(out, lq, gt, None)
    assert float(skipped["ecr"]) == 0.0
    np.testing.assert_allclose(
        float(skipped["total"]),
        sum(losses.DEFAULT_WEIGHTS[k] * float(skipped[k]) for k in ("l1", "ssim", "mask", "color")),
        rtol=1e-6,
    )


def test_vgg_is_frozen(batch, vgg):
    out, lq, gt = batch
    assert not nnx.state(vgg, nnx.Param)  # nothing an nnx.Optimizer(wrt=nnx.Param) would pick up
    grads = jax.grad(lambda v: losses.ecr_loss(out.image, out.mask, lq, gt, v))(vgg)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(grads))


def test_degenerate_pixels_have_finite_gradients():
    """Black output pixels (cosine) and a saturated mask (BCE clamp) must not produce NaN."""
    img = jnp.zeros((1, 4, 4, 3)).at[0, 0, 0].set(jnp.array([0.2, 0.3, 0.4]))
    gt = jnp.full((1, 4, 4, 3), 0.5)
    g = jax.grad(losses.color_loss)(img, gt)
    assert bool(jnp.all(jnp.isfinite(g)))
    m = jnp.array([0.0, 1.0, 0.5, 1e-30]).reshape(1, 2, 2, 1)
    t = jnp.array([1.0, 0.0, 1.0, 1.0]).reshape(1, 2, 2, 1)
    np.testing.assert_allclose(
        float(losses.mask_bce(m, t)), (100 + 100 - np.log(0.5) + 69.07755) / 4, rtol=1e-5
    )
    assert bool(jnp.all(jnp.isfinite(jax.grad(losses.mask_bce)(m, t))))


def test_against_pytorch_transcription_other_batch_size_weights(fx, vgg):
    """Batch 3, 40x72 (pooling and VGG floor odd sizes), other weights: values and d total / d (image, mask)."""
    torch = pytest.importorskip("torch")
    from recnet_jax import torch_twin  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(7)
    b, h, w = 3, 40, 72
    gt = rng.uniform(0.05, 0.95, (b, h, w, 3)).astype(np.float32)
    lq = np.clip(gt * rng.uniform(0.2, 1.6, (b, 1, 1, 3)) + rng.normal(0, 0.05, gt.shape), 0, 1).astype(
        np.float32
    )
    image = rng.uniform(0.02, 0.98, (b, h, w, 3)).astype(np.float32)
    mask = (1 / (1 + np.exp(-rng.normal(0, 2, (b, h, w, 1))))).astype(np.float32)
    weights = {"l1": 0.7, "ssim": 0.3, "mask": 0.45, "color": 1.5, "ecr": 0.35}

    def total(image, mask, lq, gt, vgg):   # arguments, not closure constants (a faster compile)
        t = losses.loss_terms(ImageMask(image, mask), lq, gt, vgg, weights)
        return t["total"], t

    (_, terms), grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))(
        image, mask, lq, gt, vgg)

    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    net = torch_twin.vgg16_features(vgg_mapping(fx))
    t_img, t_mask = to_t(image).requires_grad_(True), to_t(mask).requires_grad_(True)
    ref = torch_twin.loss_terms(t_img, t_mask, to_t(lq), to_t(gt), net, weights)
    ref["total"].backward()
    for k in TERM_KEYS:
        assert rel_err(terms[k], ref[k].item()) <= TERM_RTOL[k], (k, float(terms[k]), ref[k].item())
    assert tensor_err(grads[0], t_img.grad.numpy().transpose(0, 2, 3, 1)) <= 1e-4
    assert tensor_err(grads[1], t_mask.grad.numpy().transpose(0, 2, 3, 1)) <= 1e-4


def test_sharded_batch_over_two_devices(fixture_path):
    """Under jit with the batch sharded on a 2-device mesh, terms and gradients equal the unsharded ones.
    A subprocess, because the device count must be set before JAX initialises."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "_losses_sharded_check.py"), str(fixture_path(LOSS_FIXTURE))],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2
    for mode in ("Explicit",):
        assert report[mode]["term_max_rel"] <= 1e-6, report
        assert report[mode]["grad_max_rel"] <= 1e-5, report
        assert report[mode]["grad_sharding"].startswith("P('data'"), report
