"""The official model on the loss fixture: the terms through RECNet's forward, and the gradient of the total
with respect to all 229 parameters against the release's ``grad/*``.

The loss gradient with respect to the model outputs (image, mask) is pulled back through the model's VJP.
Two float32 effects decide how this is set up (numbers measured on loss_a; see docs/losses.md):

* The ECR's mask gradient crosses a near-tie in a VGG 2x2 max pool (branch ``l_b_minus``, second pool: two
  candidates 1e-8 apart, 2e-7 relative). Any float32 evaluation may route it either way: ours, and a float32
  PyTorch re-run of the release's loss on the same tensors, route it the other way from the fixture's run,
  which moves the EMP and stem gradients by up to 4.8e-3 here (1.6e-2 with a jitted
  forward; relative to max |g|). The float64 loss gradient
  routes it as the fixture does. So the loss is differentiated in float64 (x64) for the <= 1e-4 check, and in
  float32 for a check of the 219 ``dualprocess.*`` tensors, which the mask gradient does not reach.
* The model's forward is evaluated eagerly: a jitted forward+backward of the float32 model puts the attention
  path's gradients (``mssa.temperature``, ``project_in``, ``dwconv3x3``) up to 1.6e-4 away (1.5e-3 with
  ``conv_impl='lax'``), against <= 6e-5 eagerly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recnet_jax import convert, losses

from _losses_util import (LOSS_FIXTURE, TERM_KEYS, TERM_RTOL, ImageMask, load_npz, nhwc, rel_err, tensor_err,
                          terms_jit, vgg_mapping)

GRAD_TOL = 1e-4  # max |g - g_ref| / max |g_ref|, per tensor
MASK_PATH = ("extract.", "learned_mask.")  # the parameters that M depends on


@pytest.fixture(scope="module")
def fx(fixture_path):
  return load_npz(fixture_path(LOSS_FIXTURE))


@pytest.fixture(scope="module")
def setup(fx):
  """(vgg, lq, gt, (image, mask), jitted pullback: cotangents (d image, d mask) -> {official key: grad})."""
  model = convert.from_official(fx, norm_variant="official")
  vgg = losses.load_vgg16(vgg_mapping(fx))
  lq, gt = nhwc(fx["lq"]), nhwc(fx["gt"])
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def forward(p):
    out = nnx.merge(graphdef, p, rest)(lq)
    return out.image, out.mask

  outputs, vjp = jax.vjp(forward, params)
  vjp = jax.jit(vjp)
  return vgg, lq, gt, outputs, lambda ct: convert.to_official(vjp(ct)[0])


def _loss_grad(setup, dtype):
  vgg, lq, gt, (image, mask), _ = setup
  def total(image, mask):
    return losses.loss_terms(ImageMask(image, mask), jnp.asarray(lq, dtype), jnp.asarray(gt, dtype), vgg)["total"]
  gi, gm = jax.jit(jax.grad(total, argnums=(0, 1)))(jnp.asarray(image, dtype), jnp.asarray(mask, dtype))
  return np.asarray(gi, np.float32), np.asarray(gm, np.float32)


def _errors(grads, fx):
  keys = [k[len("grad/"):] for k in fx if k.startswith("grad/")]
  assert sorted(grads) == sorted(keys) and len(keys) == 229
  return {k: tensor_err(grads[k], fx["grad/" + k]) for k in keys}


def _worst(errs, n=5):
  return [(k, f"{e:.2e}") for k, e in sorted(errs.items(), key=lambda kv: -kv[1])[:n]]


@pytest.fixture(scope="module")
def model_terms(setup):
  vgg, lq, gt, (image, mask), _ = setup
  return terms_jit(ImageMask(image, mask), lq, gt, vgg)


@pytest.mark.parametrize("name", list(TERM_KEYS))
def test_terms_through_model_match_fixture(model_terms, fx, name):
  terms = model_terms
  err = rel_err(terms[name], fx[TERM_KEYS[name]])
  assert err <= TERM_RTOL[name], f"{name}: {float(terms[name])!r} vs {float(fx[TERM_KEYS[name]])!r}, rel {err:.2e}"


def test_gradients_of_total_match_fixture(setup, fx):
  """d total / d params, the loss differentiated in float64: every tensor <= 1e-4 of its max |g|."""
  with jax.enable_x64(True):
    cotangents = _loss_grad(setup, jnp.float64)
  errs = _errors(setup[4](cotangents), fx)
  assert max(errs.values()) <= GRAD_TOL, f"worst tensors (max|diff|/max|ref|): {_worst(errs)}"


def test_float32_loss_gradients_match_fixture(setup, fx):
  """The float32 loss: the 219 dualprocess tensors <= 1e-4; the mask path within the VGG near-tie's reach."""
  errs = _errors(setup[4](_loss_grad(setup, jnp.float32)), fx)
  rest = {k: e for k, e in errs.items() if not k.startswith(MASK_PATH)}
  assert len(rest) == 219
  assert max(rest.values()) <= GRAD_TOL, f"worst tensors: {_worst(rest)}"
  assert max(errs.values()) <= 3e-2, f"worst tensors: {_worst(errs)}"
