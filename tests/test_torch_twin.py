"""The PyTorch twin (recnet_jax.torch_twin): the release's state_dict layout, parity with the official
outputs and loss on the shared fixtures, equality with the JAX model in both norm variants, weight
round trips between the frameworks, and that importing recnet_jax never imports torch."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import recnet_jax
from recnet_jax import convert

torch = pytest.importorskip("torch")
from recnet_jax import torch_twin  # noqa: E402  pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
ATOL = 1e-5
# twin key -> fixture key (loss_a).
LOSS_KEYS = {"l1": "l1", "ssim": "ssim_loss", "mask": "bce", "color": "color", "ecr": "exc",
             "total": "total"}


def nhwc(a):
    return np.asarray(a).transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def loss_fx(fixture_path):
    return dict(np.load(fixture_path("official_recnet_loss_a.npz")))


def test_state_dict_is_the_releases():
    net = torch_twin.RECNetTorch()
    sd = net.state_dict()
    assert list(sd) == [key for key, _, _ in convert.official_layout(5)]   # keys and their order
    assert sum(v.numel() for v in sd.values()) == 38_975


def test_initial_blur_kernel_is_the_releases(parity):
    net = torch_twin.RECNetTorch()
    np.testing.assert_allclose(net.dualprocess.conv1.norm.blur.kernel.detach().numpy(),
                               parity["init/blur_kernel_gaussian31_std3"], atol=1e-9, rtol=0)


def test_parity_with_the_release_through_converted_weights(parity):
    """Fixture weights -> NNX -> convert.to_official -> the twin: all outputs within 1e-5."""
    jax_model = convert.from_official({k: v for k, v in parity.items() if k.startswith("param/")})
    net = torch_twin.RECNetTorch()
    net.load_state_dict(torch_twin.state_dict_from_numpy(convert.to_official(jax_model)))
    with torch.no_grad():
        out = net(torch.from_numpy(parity["x"]))
    pairs = [(out.image, "out"), (out.mask, "mask"), (out.stem, "x_pre"), (out.pre_clamp, "x_final")]
    pairs += [(f, f"feat{k + 1}") for k, f in enumerate(out.features)]
    for tensor, key in pairs:
        np.testing.assert_allclose(tensor.numpy(), parity[key], atol=ATOL, rtol=0, err_msg=key)


def test_objective_and_gradients_match_the_release(loss_fx):
    """The twin's model + objective on loss_a: every term within 1e-5 relative, and d total / d param
    within 1e-4 of each tensor's max |g| (the 10 EMP/stem tensors within 3e-2: the ECR's mask gradient
    crosses a float32 near-tie in a VGG max pool, docs/losses.md)."""
    net = torch_twin.RECNetTorch()
    net.load_state_dict(torch_twin.state_dict_from_numpy(loss_fx))
    vgg = torch_twin.vgg16_features({k: v for k, v in loss_fx.items() if k.startswith("vgg/")})
    lq, gt = torch.from_numpy(loss_fx["lq"]), torch.from_numpy(loss_fx["gt"])
    out = net(lq)
    terms = torch_twin.loss_terms(out.image, out.mask, lq, gt, vgg)
    for key, fkey in LOSS_KEYS.items():
        ref = float(loss_fx[f"loss/{fkey}"])
        assert abs(terms[key].item() - ref) <= 1e-5 * abs(ref), (key, terms[key].item(), ref)
    terms["total"].backward()
    for key, p in net.named_parameters():
        g = loss_fx[f"grad/{key}"]
        tol = 1e-4 if key.startswith("dualprocess.") else 3e-2
        assert np.abs(p.grad.numpy() - g).max() <= tol * np.abs(g).max(), key


def test_paper_variant_equals_the_jax_model():
    """A fresh JAX model in recnet_jax's default 'paper' variant, moved to the twin."""
    model = recnet_jax.RECNet(norm_variant="paper", rngs=nnx.Rngs(3))
    graphdef, state = nnx.split(model)
    x = np.random.default_rng(0).uniform(size=(1, 24, 40, 3)).astype(np.float32)
    out = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(x))
    net = torch_twin.RECNetTorch(norm_variant="paper")
    net.load_state_dict(torch_twin.state_dict_from_numpy(convert.to_official(model)))
    with torch.no_grad():
        ref = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(out.image, nhwc(ref.image), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out.mask, nhwc(ref.mask), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out.features[-1], nhwc(ref.features[-1]), atol=ATOL, rtol=0)


def test_torch_to_jax_round_trip_is_exact():
    torch.manual_seed(1)
    net = torch_twin.RECNetTorch()
    sd = torch_twin.state_dict_to_numpy(net)
    back = convert.to_official(convert.from_official(sd))
    assert list(back) == list(sd)
    assert all(np.array_equal(back[k], sd[k]) for k in sd)


def test_train_step_runs_and_updates():
    torch.manual_seed(0)
    net = torch_twin.RECNetTorch()
    before = net.extract.weight.detach().clone()
    step = torch_twin.make_train_step(net, torch_twin.vgg16_features(seed=0))
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 32, 32, generator=gen)
    metrics = step((gt * 0.5).clamp(0, 1), gt)
    assert set(metrics) == {"l1", "ssim", "mask", "color", "ecr", "total"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert not torch.equal(before, net.extract.weight)


def test_importing_recnet_jax_does_not_import_torch():
    code = ("import sys, recnet_jax, recnet_jax.bench, recnet_jax.convert, recnet_jax.losses; "
            "import json; print(json.dumps('torch' in sys.modules))")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) is False
