"""The official model on the loss fixture: the terms through RECNet's forward, and the gradient of the
total with respect to all 229 parameters against the release's ``grad/*``.

Three float32 facts shape these tests (measured on loss_a, per tensor as max |g - ref| / max |ref|):

* **The fixture is itself float32.** A float64 evaluation of the same model and loss (``dtype=float64``
  under x64) is 1.08e-4 away from the fixture on ``dualprocess.conv1.mssa.temperature`` and <= 7e-5 on
  every other tensor: the release's float32 run has that much rounding in the attention temperature's
  gradient (its logits are sums over all pixels, reaching hundreds). So the temperature tensors are held
  to 1.5e-4 against the fixture and everything else to the issue's 1e-4; against our own float64
  reference, our jitted float32 gradient is held to 2e-5 on every tensor (measured <= 1.1e-5).
* **The mask gradient crosses a near-tie** in one VGG 2x2 max pool (branch ``l_b_minus``, two candidates
  2e-7 apart). float32 may route it either way; float64 routes it as the fixture did. Where the loss is
  differentiated in float32 the EMP and stem gradients (``learned_mask.*``, ``extract.*``) move by up to a
  few 1e-3; the 219 ``dualprocess.*`` tensors are not reached by it.
* The model's channel-attention softmax has a cancellation-free VJP (``mru.attention_softmax``); without
  it a jitted float32 backward pass was 2.5e-3 away on the temperature.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recnet_jax import convert, losses

from _losses_util import (LOSS_FIXTURE, TERM_KEYS, TERM_RTOL, ImageMask, load_npz, nhwc, rel_err,
                          tensor_err, terms_jit, vgg_mapping)

GRAD_TOL = 1e-4          # the tolerance, per tensor
TEMPERATURE_TOL = 1.5e-4  # the fixture's own float32 error on the temperature is 1.08e-4 (above)
MASK_PATH = ("extract.", "learned_mask.")  # the parameters that M depends on


@pytest.fixture(scope="module")
def fx(fixture_path):
    return load_npz(fixture_path(LOSS_FIXTURE))


@pytest.fixture(scope="module")
def setup(fx):
    """(model, vgg, lq, gt)."""
    model = convert.from_official(fx, norm_variant="official")
    vgg = losses.load_vgg16(vgg_mapping(fx))
    return model, vgg, jnp.asarray(nhwc(fx["lq"])), jnp.asarray(nhwc(fx["gt"]))


def _forward(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def forward(p, lq):
        out = nnx.merge(graphdef, p, rest)(lq)
        return out.image, out.mask
    return forward, params


def _total(image, mask, lq, gt, vgg):
    return losses.loss_terms(ImageMask(image, mask), lq, gt, vgg)["total"]


def _errors(grads, ref, fx=None):
    keys = [k[len("grad/"):] for k in fx if k.startswith("grad/")] if fx is not None else list(ref)
    assert sorted(grads) == sorted(keys) and len(keys) == 229
    return {k: tensor_err(grads[k], fx["grad/" + k] if fx is not None else ref[k]) for k in keys}


def _check_fixture_tolerances(errs, only=None):
    worst = sorted(errs.items(), key=lambda kv: -kv[1])[:5]
    for key, err in errs.items():
        if only is not None and not only(key):
            continue
        tol = TEMPERATURE_TOL if key.endswith("mssa.temperature") else GRAD_TOL
        assert err <= tol, f"{key}: {err:.2e} > {tol:.0e}; worst: {[(k, f'{e:.2e}') for k, e in worst]}"


@pytest.fixture(scope="module")
def jitted_float32(setup):
    """The training-step gradient: the float32 model jitted end to end, its output cotangents from the
    loss differentiated in float64 (which routes the VGG near-tie as the fixture does) and in float32."""
    model, vgg, lq, gt = setup
    forward, params = _forward(model)
    pullback = jax.jit(lambda p, ct: jax.vjp(lambda q: forward(q, lq), p)[1](ct)[0])
    image, mask = jax.jit(forward)(params, lq)
    with jax.enable_x64(True):
        f64 = lambda a: jnp.asarray(a, jnp.float64)
        ct64 = jax.jit(jax.grad(_total, argnums=(0, 1)))(f64(image), f64(mask), f64(lq), f64(gt), vgg)
        ct64 = tuple(np.asarray(c, np.float32) for c in ct64)
    ct32 = jax.jit(jax.grad(_total, argnums=(0, 1)))(image, mask, lq, gt, vgg)
    return (ImageMask(image, mask), convert.to_official(pullback(params, ct64)),
            convert.to_official(pullback(params, ct32)), ct64)


@pytest.mark.parametrize("name", list(TERM_KEYS))
def test_terms_through_model_match_fixture(jitted_float32, setup, fx, name):
    _, vgg, lq, gt = setup
    terms = terms_jit(jitted_float32[0], lq, gt, vgg)
    err = rel_err(terms[name], fx[TERM_KEYS[name]])
    assert err <= TERM_RTOL[name], f"{name}: {float(terms[name])!r} vs {float(fx[TERM_KEYS[name]])!r}, rel {err:.2e}"


def test_gradients_of_total_match_fixture(jitted_float32, fx):
    """d total / d params, jitted float32 model: every tensor <= 1e-4 (temperature: 1.5e-4, above)."""
    _check_fixture_tolerances(_errors(jitted_float32[1], None, fx))


def test_float32_loss_gradients_match_fixture(jitted_float32, fx):
    """All float32: the 219 dualprocess tensors as above; the mask path within the near-tie's reach."""
    errs = _errors(jitted_float32[2], None, fx)
    _check_fixture_tolerances(errs, only=lambda k: not k.startswith(MASK_PATH))
    assert max(errs.values()) <= 3e-2, sorted(errs.items(), key=lambda kv: -kv[1])[:3]


def test_float32_gradient_is_within_2e5_of_a_float64_reference(setup, jitted_float32, fx):
    """The same model and loss in float64: close to the fixture (its float32 error on the temperature is
    the only one above 1e-4), and our float32 training gradient within 2e-5 of it on every tensor."""
    model, vgg, lq, gt = setup
    with jax.enable_x64(True):
        model64 = convert.from_official(fx, dtype=jnp.float64)
        forward, params = _forward(model64)
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        f64 = lambda a: jnp.asarray(a, jnp.float64)
        # lq, gt and the VGG weights are arguments, not closure constants, which XLA embeds in
        # the executable (68 MB of it): alone with a cold cache, this test took 45 s with them
        # and 34 s without.
        loss64 = lambda p, a, b, v: _total(*forward(p, a), a, b, v)  # noqa: E731
        grad = jax.jit(jax.grad(loss64))(params, f64(lq), f64(gt), vgg)
        ref = convert.to_official(jax.tree.map(np.asarray, grad))
    _check_fixture_tolerances(_errors(ref, None, fx))
    errs = _errors(jitted_float32[1], ref)
    assert max(errs.values()) <= 2e-5, sorted(errs.items(), key=lambda kv: -kv[1])[:3]


def test_rematerialized_blocks_give_the_training_gradient(fx, setup, jitted_float32):
    """RECNet(remat=True), the trainer's default: each block recomputed in its own backward. The same
    parameter gradient as keeping the activations, to float32 rounding (the recomputed forward is fused
    differently: measured <= 5.4e-6 per tensor; held to the 2e-5 of the float64 check above), so the
    fixture's too."""
    _, _, lq, _ = setup
    model = convert.from_official(fx, norm_variant="official")
    model.remat = True
    forward, params = _forward(model)
    grad = jax.jit(lambda p, ct: jax.vjp(lambda q: forward(q, lq), p)[1](ct)[0])(params, jitted_float32[3])
    grad = convert.to_official(grad)
    errs = _errors(grad, jitted_float32[1])
    assert max(errs.values()) <= 2e-5, sorted(errs.items(), key=lambda kv: -kv[1])[:3]
    _check_fixture_tolerances(_errors(grad, None, fx))
