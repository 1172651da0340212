"""grain pipelines: determinism, same crop in input and target, flips, resume, sharding, eval resize,
and a read path that never imports TensorFlow."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from recnet_jax.data import build, pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]
CROP = 32
# (H, W) per training scene: multiples of 4 and not, so both the identity and the resize path run.
SIZES = [(40, 48), (41, 47), (44, 52)]
EVS = ["N1", "P1.5"]


def _image(h, w, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def msec(tmp_path_factory):
    """A tiny MSEC-layout dataset where every input is 255 - its target (so crops can be matched).

    train: 3 scenes x 2 exposures = 6 examples; test: one 41x47 scene x 5 exposures."""
    root = tmp_path_factory.mktemp("msec")
    raw, arrays = root / "raw", {}
    for split, scenes, evs in (("train", [(f"s{i}", hw) for i, hw in enumerate(SIZES)], EVS),
                               ("test", [("t0", (41, 47))], ["N1.5", "N1", "0", "P1", "P1.5"])):
        gt_dir = raw / split / ("GT_IMAGES" if split == "train" else "expert_c_testing_set")
        (raw / split / "INPUT_IMAGES").mkdir(parents=True), gt_dir.mkdir(parents=True)
        for k, (scene, (h, w)) in enumerate(scenes):
            gt = _image(h, w, k)
            Image.fromarray(gt).save(gt_dir / f"{scene}.png")
            for ev in evs:
                Image.fromarray(255 - gt).save(raw / split / "INPUT_IMAGES" / f"{scene}_{ev}.png")
                arrays[f"{scene}_{ev}"] = 255 - gt
    build.build_dataset("msec", root / "data", raw, min_size=CROP)
    return root / "data", arrays


def _train(data_dir, **kw):
    kw = {"batch_size": 4, "crop_size": CROP, "seed": 0, "process_index": 0, "process_count": 1, **kw}
    return pipeline.train_dataset("msec", str(data_dir), **kw)


def _find_transform(crop: np.ndarray, source: np.ndarray) -> tuple[str, int, int]:
    """Which flip state and offset of the (resized) source gives this crop exactly."""
    full = pipeline.resize_to_multiple(source)
    hp, wp = full.shape[:2]
    for top in range(hp - CROP + 1):
        for left in range(wp - CROP + 1):
            win = full[top:top + CROP, left:left + CROP]
            for label, t in (("id", win), ("h", win[:, ::-1]), ("v", win[::-1]), ("hv", win[::-1, ::-1])):
                if np.abs(t - crop).max() < 1e-6:
                    return label, top, left
    raise AssertionError("crop not found in its source image")


def test_batch_format_and_same_crop_in_input_and_target(msec):
    data_dir, arrays = msec
    ds = _train(data_dir)
    seen = set()
    for step in range(6):  # 24 crops = 4 epochs of 6 examples
        b = ds[step]
        assert b["input"].shape == b["target"].shape == (4, CROP, CROP, 3)
        assert b["input"].dtype == b["target"].dtype == np.float32
        assert b["input"].min() >= 0.0 and b["input"].max() <= 1.0
        assert b["name"].shape == b["exposure"].shape == (4,)
        # input = 1 - target at every pixel only if the crop (and flip) is the same in both.
        np.testing.assert_allclose(b["input"] + b["target"], 1.0, atol=1e-6)
        for i in range(4):
            name = str(b["name"][i])
            assert str(b["exposure"][i]) == name.rsplit("_", 1)[1]
            label, top, left = _find_transform(b["input"][i], arrays[name])
            seen.add(label)
    assert seen == {"id", "h", "v", "hv"}  # the three p=0.5 ops reach all four orientations


def test_deterministic_by_seed(msec):
    data_dir, _ = msec
    a, b, c = _train(data_dir, seed=3), _train(data_dir, seed=3), _train(data_dir, seed=4)
    for step in range(3):
        for k in ("input", "target", "name"):
            np.testing.assert_array_equal(a[step][k], b[step][k])
    assert any(not np.array_equal(a[s]["input"], c[s]["input"]) for s in range(3))
    # New order each epoch (6 examples, batch 4: steps 0-1 cover epoch 0's first 8 positions).
    epoch0 = [str(n) for s in range(3) for n in a[s]["name"]][:6]
    epoch1 = [str(n) for s in range(3) for n in a[s]["name"]][6:12]
    assert sorted(epoch0) == sorted(epoch1) and len(set(epoch0)) == 6


def test_iterator_state_restore_gives_identical_next_batch(msec):
    data_dir, _ = msec
    it = pipeline.to_iterator(_train(data_dir, seed=5), num_threads=2)
    for _ in range(3):  # crosses an epoch boundary (6 examples, batch 4)
        next(it)
    state = it.get_state()
    expected = next(it)
    it2 = pipeline.to_iterator(_train(data_dir, seed=5), num_threads=1)
    it2.set_state(state)
    got = next(it2)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])
    assert not np.array_equal(next(it2)["input"], expected["input"])


def test_per_host_sharding(msec):
    data_dir, _ = msec
    names = []
    for host in range(2):
        ev = pipeline.eval_dataset("msec", str(data_dir), split="train", process_index=host, process_count=2)
        names.append({str(ev[i]["name"][0]) for i in range(len(ev))})
    assert names[0].isdisjoint(names[1]) and len(names[0] | names[1]) == 6
    t0 = _train(data_dir, batch_size=1, process_index=0, process_count=2, shuffle=False)
    t1 = _train(data_dir, batch_size=1, process_index=1, process_count=2, shuffle=False)
    assert {str(t0[i]["name"][0]) for i in range(3)} == names[0]
    assert {str(t1[i]["name"][0]) for i in range(3)} == names[1]


def test_eval_full_images_resized_to_multiple_of_4_with_labels(msec):
    data_dir, arrays = msec
    ev = pipeline.eval_dataset("msec", str(data_dir))
    assert len(ev) == 5
    labels = set()
    for i in range(len(ev)):
        ex = ev[i]
        assert ex["input"].shape == ex["target"].shape == (1, 44, 48, 3)
        assert ex["input"].dtype == np.float32 and ex["size"].tolist() == [[41, 47]]
        labels.add(str(ex["exposure"][0]))
        np.testing.assert_allclose(ex["input"][0], pipeline.resize_to_multiple(arrays[str(ex["name"][0])]))
    assert labels == {"N1.5", "N1", "0", "P1", "P1.5"}


def test_resize_matches_half_pixel_bilinear_and_is_identity_on_multiples():
    skt = pytest.importorskip("skimage.transform")
    for h, w in ((41, 47), (37, 50), (3, 5)):
        img = _image(h, w, 1)
        out = pipeline.resize_to_multiple(img)
        assert out.shape == (-(-h // 4) * 4, -(-w // 4) * 4, 3)
        # skimage order-1 resize with edge clamping = OpenCV INTER_LINEAR (half-pixel centres).
        ref = skt.resize(img / 255.0, out.shape, order=1, mode="edge", anti_aliasing=False)
        np.testing.assert_allclose(out, ref, atol=1e-6)
        win = pipeline.resize_window(img, out.shape[:2], 1, 2, (out.shape[0] - 3, out.shape[1] - 4))
        np.testing.assert_allclose(win, out[1:-2, 2:-2], atol=1e-7)
    img = _image(40, 48, 2)
    np.testing.assert_array_equal(pipeline.resize_to_multiple(img), img.astype(np.float32) / 255.0)


def test_image_smaller_than_crop_is_a_clear_error(msec):
    data_dir, _ = msec
    ds = _train(data_dir, crop_size=64, shuffle=False)
    with pytest.raises(ValueError, match=r"example 's\d_.*' is \d+x\d+ \(HxW\), smaller than the crop 64"):
        ds[0]


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m recnet_jax.data.build --dataset sice"):
        pipeline.train_dataset("sice", str(tmp_path), batch_size=1, process_index=0, process_count=1)


def test_read_path_never_imports_tensorflow(msec):
    data_dir, _ = msec
    code = textwrap.dedent(f"""
        import sys
        from recnet_jax.data import pipeline
        b = pipeline.train_dataset("msec", {str(data_dir)!r}, batch_size=2, crop_size={CROP},
                                   process_index=0, process_count=1)[0]
        it = pipeline.to_iterator(pipeline.train_dataset("msec", {str(data_dir)!r}, batch_size=2,
                                  crop_size={CROP}, process_index=0, process_count=1))
        next(it)
        e = pipeline.eval_dataset("msec", {str(data_dir)!r}, process_index=0, process_count=1)[0]
        assert b["input"].shape == (2, {CROP}, {CROP}, 3) and e["input"].shape == (1, 44, 48, 3)
        print("tensorflow" in sys.modules)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"
