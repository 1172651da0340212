"""The official-checkpoint converter: formats, strict key checks, Orbax and the CLI."""

import json

import numpy as np
import pytest
from flax import nnx

from recnet_jax import checkpointing, convert


@pytest.fixture(scope="module")
def state_dict(fixture_path):
    return convert.read_state_dict(fixture_path("official_recnet_parity_a.npz"))


def _params(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _assert_same_model(a, b):
    import jax
    for x, y in zip(jax.tree.leaves(_params(a)), jax.tree.leaves(_params(b))):
        np.testing.assert_array_equal(x, y)


def test_read_state_dict_strips_prefixes(state_dict):
    assert len(state_dict) == 229
    prefixed = {f"module.{k}": v for k, v in state_dict.items()}
    assert convert.read_state_dict(prefixed).keys() == state_dict.keys()
    assert convert.infer_config(state_dict) == dict(nc=8, num_blocks=5, num_heads=2, blur_size=31)


def test_mismatched_checkpoint_lists_every_problem_in_one_error(state_dict):
    broken = dict(state_dict)
    del broken["dualprocess.conv2.mssa.temperature"]
    broken["dualprocess.conv1.mssa.extra.weight"] = np.zeros((1,), np.float32)
    broken["dualprocess.conv3.post.0.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    with pytest.raises(ValueError) as err:
        convert.from_official(broken)
    msg = str(err.value)
    assert "missing keys (1): ['dualprocess.conv2.mssa.temperature']" in msg
    assert "unknown keys (1): ['dualprocess.conv1.mssa.extra.weight']" in msg
    assert "dualprocess.conv3.post.0.weight: got (8, 8, 3, 3), expected (8, 16, 3, 3)" in msg


def test_not_a_recnet_checkpoint_is_refused(tmp_path):
    with pytest.raises(ValueError, match="extract.weight"):
        convert.from_official({"features.0.weight": np.zeros((64, 3, 3, 3))})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        convert.from_official(tmp_path / "missing.pth")
    (tmp_path / "w.ckpt").write_bytes(b"x")
    with pytest.raises(ValueError, match=".pth/.pt"):
        convert.from_official(tmp_path / "w.ckpt")


def test_other_sizes_are_inferred_from_the_weights():
    import recnet_jax
    small = recnet_jax.RECNet(nc=4, num_blocks=2, num_heads=1, blur_size=7, rngs=nnx.Rngs(1))
    back = convert.from_official(convert.to_official(small))
    assert (back.nc, back.num_blocks, back.num_heads, back.blur_size) == (4, 2, 1, 7)
    _assert_same_model(small, back)


def test_pth_round_trip(tmp_path, state_dict):
    torch = pytest.importorskip("torch")
    model = convert.from_official(state_dict)
    path = convert.save_official(convert.to_official(model), tmp_path / "recnet.pth")
    loaded = torch.load(path, weights_only=True)
    assert list(loaded) == list(state_dict)
    assert all(np.array_equal(loaded[k].numpy(), state_dict[k]) for k in state_dict)
    _assert_same_model(convert.from_official(path), model)
    torch.save({"state_dict": {f"module.{k}": v for k, v in loaded.items()}}, tmp_path / "wrapped.pth")
    _assert_same_model(convert.from_official(tmp_path / "wrapped.pth"), model)


def test_orbax_round_trip_and_cli(tmp_path, fixture_path, state_dict, capsys):
    src = fixture_path("official_recnet_parity_a.npz")
    ckpt = tmp_path / "ckpt"
    assert convert.main(["to-jax", str(src), "--out", str(ckpt)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(ckpt)
    model = checkpointing.load_model(ckpt)
    assert model.norm_variant == "official"
    assert checkpointing.load_model(ckpt, norm_variant="paper").norm_variant == "paper"
    out = tmp_path / "back.npz"
    assert convert.main(["to-official", str(ckpt), "--out", str(out)]) == 0
    back = np.load(out)
    assert sorted(back.files) == sorted(state_dict)
    assert all(np.array_equal(back[k], state_dict[k]) for k in state_dict)
    # Refuses to overwrite, and a non-checkpoint directory gets a clear error.
    with pytest.raises(FileExistsError):
        checkpointing.save_model(ckpt, model)
    assert convert.main(["to-official", str(tmp_path), "--out", str(out)]) == 2
    assert "not a recnet_jax model checkpoint" in capsys.readouterr().err


def test_model_checkpoint_keeps_the_architecture(tmp_path):
    import recnet_jax
    model = recnet_jax.RECNet(nc=4, num_blocks=1, num_heads=1, blur_size=5, norm_eps=1e-3,
                              rngs=nnx.Rngs(2))
    back = checkpointing.load_model(checkpointing.save_model(tmp_path / "m", model))
    assert back.config() == model.config() and back.config()["norm_eps"] == 1e-3
    _assert_same_model(model, back)
