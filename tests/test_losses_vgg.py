"""VGG16 loading (mapping, .npz, torchvision .pth + the converter CLI), its errors, and the start-up check
that turns config.loss into a VGG or one clear error."""

import logging

import jax
import ml_collections
import numpy as np
import pytest

from recnet_jax import convert, losses
from recnet_jax.losses import vgg as vgg_lib

from _losses_util import LOSS_FIXTURE, load_npz, nhwc, tensor_err, vgg_mapping


@pytest.fixture(scope="module")
def fx(fixture_path):
    return load_npz(fixture_path(LOSS_FIXTURE))


@pytest.fixture(scope="module")
def features_ref(fx):
    """(VGG input [2, 16, 16, 3], official relu4_3 output [2, 2, 2, 512]) from the fixture's ECR internals."""
    return nhwc(fx["exc/in_f_f"]), nhwc(fx["exc/f_f"])


_features = jax.jit(lambda v, x: v(x))


def _check_features(vgg, features_ref):
    x, ref = features_ref
    assert tensor_err(_features(vgg, x), ref) < 2e-6


def test_mapping_with_any_prefix_loads(fx, features_ref):
    mapping = vgg_mapping(fx)  # 'vgg/<i>.weight'
    _check_features(losses.load_vgg16(mapping), features_ref)
    bare = {k[len("vgg/") :]: v for k, v in mapping.items()}
    torchvision = {"features." + k: v for k, v in bare.items()}
    torchvision.update(
        {
            "features.24.weight": np.zeros((512, 512, 3, 3), np.float32),
            "classifier.6.bias": np.zeros((1000,), np.float32),
        }
    )  # a full vgg16 state dict: ignored
    for m in (bare, torchvision):
        v = losses.load_vgg16(m)
        for a, b in zip(v.kernels, losses.load_vgg16(mapping).kernels):
            np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]))


def test_loader_errors_list_every_problem(fx):
    bare = {k[len("vgg/") :]: v for k, v in vgg_mapping(fx).items()}
    broken = dict(bare)
    del broken["21.bias"]
    broken["5.weight"] = broken["5.weight"][:, :, :2]
    broken["features.99.weight"] = np.zeros(3)
    broken["features.0.weight"] = bare["0.weight"]
    with pytest.raises(ValueError) as e:
        losses.load_vgg16(broken)
    msg = str(e.value)
    for part in (
        "missing keys ['21.bias']",
        "unknown keys ['features.99.weight']",
        "features.0.weight",
        "5.weight: (128, 64, 2, 3), expected (128, 64, 3, 3)",
        "0.weight ... 21.bias",
    ):
        assert part in msg, msg


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz does not exist"):
        losses.load_vgg16(tmp_path / "nope.npz")
    bad = tmp_path / "weights.h5"
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match=r"weights\.h5: unsupported suffix '\.h5'"):
        losses.load_vgg16(bad)
    npz = tmp_path / "other.npz"
    np.savez(npz, foo=np.zeros(2))
    with pytest.raises(ValueError, match=r"other\.npz is not a VGG16.*missing keys.*unknown keys \['foo'\]"):
        losses.load_vgg16(npz)
    assert convert.main(["vgg16", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o.npz")]) == 2


def test_pth_round_trip_through_converter_cli(fx, tmp_path, features_ref, capsys):
    torch = pytest.importorskip("torch")
    state = {"features." + k[len("vgg/") :]: torch.from_numpy(v.copy()) for k, v in vgg_mapping(fx).items()}
    state["classifier.0.weight"] = torch.zeros(4096, 8)  # extra torchvision keys are ignored
    pth = tmp_path / "vgg16-test.pth"
    torch.save(state, pth)
    out = tmp_path / "conv" / "vgg16.npz"
    assert convert.main(["vgg16", str(pth), "--out", str(out)]) == 0
    assert "config.loss.vgg_weights" in capsys.readouterr().out
    with np.load(out) as data:
        assert sorted(data.files) == sorted("features." + k for k in vgg_lib.expected_shapes())
        for k in data.files:
            np.testing.assert_array_equal(data[k], state[k].numpy())
    _check_features(losses.load_vgg16(out), features_ref)
    _check_features(losses.load_vgg16(pth), features_ref)


def _loss_cfg(ecr=0.1, vgg_weights="", vgg_random_init=False):
    cfg = ml_collections.ConfigDict()
    cfg.weights = ml_collections.ConfigDict({"l1": 1.0, "ssim": 0.1, "mask": 0.25, "color": 1.0, "ecr": ecr})
    cfg.vgg_weights = vgg_weights
    cfg.vgg_random_init = vgg_random_init
    return cfg


def test_startup_check_without_weights_fails_clearly():
    with pytest.raises(FileNotFoundError) as e:
        losses.vgg_from_config(_loss_cfg())
    msg = str(e.value)
    assert "config.loss.vgg_weights" in msg and losses.CONVERTER_COMMAND in msg, msg
    with pytest.raises(FileNotFoundError, match=r"config\.loss\.vgg_weights='missing\.npz': no such file"):
        losses.vgg_from_config(_loss_cfg(vgg_weights="missing.npz"))
    with pytest.raises(ValueError, match="contradict"):
        losses.vgg_from_config(_loss_cfg(vgg_weights="x.npz", vgg_random_init=True))


def test_startup_check_random_init_notes_once_and_zero_weight_needs_none(caplog):
    with caplog.at_level(logging.INFO, logger="absl"):
        vgg = losses.vgg_from_config(_loss_cfg(vgg_random_init=True))
    notes = [r for r in caplog.records if "vgg_random_init" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO
    assert isinstance(vgg, losses.VGG16Features)
    k = np.asarray(vgg.kernels[9][...])  # He (fan_out) init, as torchvision: std sqrt(2 / (512 * 9))
    np.testing.assert_allclose(k.std(), np.sqrt(2 / (512 * 9)), rtol=0.01)
    assert losses.vgg_from_config(_loss_cfg(ecr=0.0)) is None
    assert losses.vgg_from_config(_loss_cfg(ecr=0.0, vgg_weights="missing.npz")) is None


def test_startup_check_loads_the_file(fx, tmp_path, features_ref):
    path = losses.save_vgg16_npz(losses.load_vgg16(vgg_mapping(fx)), tmp_path / "vgg.npz")
    _check_features(losses.vgg_from_config(_loss_cfg(vgg_weights=str(path))), features_ref)
