"""Dataset builders on tiny generated files in each dataset's real layout, bad-input handling, CLI.

Real TFDS builds (ArrayRecord) into tmp_path, read back with tfds.data_source: no mocks.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from recnet_jax.data import build, images, synthetic
from recnet_jax.data.images import BadInputError, LayoutError

REPO = pathlib.Path(__file__).resolve().parents[1]
MIN = 32  # tests use 40x48 images; min_size for the train split


def write_image(path: pathlib.Path, h: int = 40, w: int = 48, seed: int = 0, quality: int = 95) -> np.ndarray:
    """Write a random smooth RGB image; return the pixels a reader will decode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))
    arr = np.clip(arr.astype(int) + rng.integers(-20, 21, arr.shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=quality) if path.suffix.lower() in (".jpg", ".jpeg") \
        else Image.fromarray(arr).save(path)
    return np.asarray(Image.open(path).convert("RGB"))


def read_split(data_dir, name, split) -> dict[str, dict]:
    src = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
    return {ex["name"].decode(): ex for ex in (src[i] for i in range(len(src)))}


def no_dataset_in(data_dir: pathlib.Path) -> bool:
    """True if nothing under data_dir looks like a (complete) TFDS dataset and no temp dir is left."""
    for root, dirs, files in os.walk(data_dir):
        if "dataset_info.json" in files or any(f.endswith(".array_record-00000-of-00001") for f in files):
            return False
    return not any(p.name.startswith(".build-") for p in data_dir.iterdir()) if data_dir.exists() else True


# ---- builders in their published layouts ------------------------------------------------------

def make_msec(root: pathlib.Path, expert_colors=True):
    evs = ["N1.5", "N1", "0", "P1", "P1.5"]
    gts = {}
    for split, scenes in (("train", ["a0001-jmac_DSC1459", "a0002-x_y_030"]), ("validation", ["a0100-v"]),
                          ("test", ["a0200-t"])):
        for s_i, scene in enumerate(scenes):
            gt_dirs = ["GT_IMAGES"] if split != "test" else [f"expert_{e}_testing_set" for e in "abcde"]
            for g_i, gd in enumerate(gt_dirs):
                gts[(split, scene, gd)] = write_image(root / split / gd / f"{scene}.jpg", seed=100 * s_i + g_i)
            for e_i, ev in enumerate(evs):
                write_image(root / split / "INPUT_IMAGES" / f"{scene}_{ev}.JPG", seed=1000 + 10 * s_i + e_i)
    return gts


def test_msec_layout_labels_and_expert(tmp_path):
    gts = make_msec(tmp_path / "raw")
    res = build.build_dataset("msec", tmp_path / "data", tmp_path / "raw", min_size=MIN)
    assert res.name == "msec/expert_c" and res.splits == {"train": 10, "validation": 5, "test": 5}
    train = read_split(tmp_path / "data", "msec", "train")  # "msec" resolves to the default config
    ex = train["a0002-x_y_030_P1.5"]
    assert ex["exposure"].decode() == "P1.5" and ex["ev"] == pytest.approx(1.5)
    assert ex["input"].dtype == np.uint8 and ex["input"].shape == (40, 48, 3)
    np.testing.assert_array_equal(ex["target"], gts[("train", "a0002-x_y_030", "GT_IMAGES")])
    np.testing.assert_array_equal(  # JPEG bytes stored as they are: pixel-exact with Pillow's decode
        ex["input"], np.asarray(Image.open(tmp_path / "raw/train/INPUT_IMAGES/a0002-x_y_030_P1.5.JPG")))
    assert {e["ev"] for e in train.values()} == {-1.5, -1.0, 0.0, 1.0, 1.5}
    test = read_split(tmp_path / "data", "msec/expert_c", "test")
    np.testing.assert_array_equal(test["a0200-t_N1"]["target"], gts[("test", "a0200-t", "expert_c_testing_set")])
    res_a = build.build_dataset("msec", tmp_path / "data", tmp_path / "raw", min_size=MIN, config="expert_a")
    test_a = read_split(tmp_path / "data", res_a.name, "test")
    np.testing.assert_array_equal(test_a["a0200-t_N1"]["target"], gts[("test", "a0200-t", "expert_a_testing_set")])


def test_msec_bad_suffix_and_missing_gt(tmp_path):
    make_msec(tmp_path / "raw")
    write_image(tmp_path / "raw/train/INPUT_IMAGES/a0003-orphan_P1.JPG")  # no GT for this base
    with pytest.raises(BadInputError, match=r"a0003-orphan_P1\.JPG: input has no target .*GT_IMAGES/a0003-orphan"):
        build.build_dataset("msec", tmp_path / "data", tmp_path / "raw", min_size=MIN)
    assert no_dataset_in(tmp_path / "data")
    write_image(tmp_path / "raw/train/INPUT_IMAGES/a0004_P2.JPG")  # not an MSEC exposure suffix
    res = build.build_dataset("msec", tmp_path / "data", tmp_path / "raw", min_size=MIN, skip_bad=True)
    s = res.summary()
    assert s["skipped"] == ["train/INPUT_IMAGES/a0003-orphan_P1.JPG", "train/INPUT_IMAGES/a0004_P2.JPG"]
    assert "no MSEC exposure suffix" in s["skip_reasons"]["train/INPUT_IMAGES/a0004_P2.JPG"]
    assert res.splits["train"] == 10


def test_msec_bad_target_skips_all_its_inputs_once_listed(tmp_path):
    make_msec(tmp_path / "raw")
    (tmp_path / "raw/train/GT_IMAGES/a0001-jmac_DSC1459.jpg").write_bytes(b"")
    res = build.build_dataset("msec", tmp_path / "data", tmp_path / "raw", min_size=MIN, skip_bad=True)
    s = res.summary()
    assert s["skipped"] == ["train/GT_IMAGES/a0001-jmac_DSC1459.jpg"] and s["skipped_pairs"] == 5
    assert res.splits["train"] == 5


def test_sice_layout(tmp_path):
    raw = tmp_path / "raw" / "SICEV2"
    mids = {}
    for split, ids in (("train", ["1", "2"]), ("test", ["4"])):
        for i in ids:
            mids[i] = write_image(raw / split / "mid" / f"{i}.JPG", seed=int(i))
            write_image(raw / split / "low" / f"{i}.JPG", seed=50 + int(i))
            write_image(raw / split / "over" / f"{i}.JPG", seed=80 + int(i))
    res = build.build_dataset("sice", tmp_path / "data", tmp_path / "raw", min_size=MIN)
    assert res.name == "sice" and res.splits == {"train": 4, "test": 2}
    test = read_split(tmp_path / "data", "sice", "test")
    assert sorted(test) == ["4_low", "4_over"]
    assert test["4_over"]["exposure"].decode() == "over"
    np.testing.assert_array_equal(test["4_low"]["target"], mids["4"])


def test_lcdp_layout(tmp_path):
    raw = tmp_path / "raw"
    gt = write_image(raw / "adobe5k/gt/a1.png", seed=1)
    inp = write_image(raw / "adobe5k/input/a1.png", seed=2)
    write_image(raw / "adobe5k/gt/a2.png", seed=3), write_image(raw / "adobe5k/input/a2.png", seed=4)
    write_image(raw / "raise/gt/r1.png", seed=5), write_image(raw / "raise/input/r1.png", seed=6)
    write_image(raw / "adobe5k/test-gt/t1.png", seed=7), write_image(raw / "adobe5k/test-input/t1.png", seed=8)
    res = build.build_dataset("lcdp", tmp_path / "data", raw, min_size=MIN)
    assert res.splits == {"train": 3, "test": 1}
    train = read_split(tmp_path / "data", "lcdp", "train")
    assert sorted(train) == ["adobe5k/a1", "adobe5k/a2", "raise/r1"]
    np.testing.assert_array_equal(train["adobe5k/a1"]["input"], inp)
    np.testing.assert_array_equal(train["adobe5k/a1"]["target"], gt)
    assert train["raise/r1"]["exposure"].decode() == "mixed"


def test_paired_flat_and_split_layouts(tmp_path):
    write_image(tmp_path / "flat/input/x.png", seed=1)
    tgt = write_image(tmp_path / "flat/target/x.jpg", seed=2)  # extensions may differ
    write_image(tmp_path / "flat/input/y.png", seed=3), write_image(tmp_path / "flat/target/y.png", seed=4)
    res = build.build_dataset("paired", tmp_path / "d1", tmp_path / "flat", min_size=MIN)
    assert res.splits == {"train": 2}
    np.testing.assert_array_equal(read_split(tmp_path / "d1", "paired", "train")["x"]["target"], tgt)
    for split in ("train", "validation"):
        write_image(tmp_path / f"split/{split}/input/z.png", seed=5)
        write_image(tmp_path / f"split/{split}/gt/z.png", seed=6)
    res = build.build_dataset("paired", tmp_path / "d2", tmp_path / "split", min_size=MIN)
    assert res.splits == {"train": 1, "validation": 1}


def test_layout_errors_are_clear(tmp_path):
    (tmp_path / "raw/input").mkdir(parents=True)
    with pytest.raises(LayoutError, match=r"no target/ \(or gt/\) folder"):
        build.build_dataset("paired", tmp_path / "data", tmp_path / "raw")
    with pytest.raises(LayoutError, match="manual folder not found or empty"):
        build.build_dataset("sice", tmp_path / "data", tmp_path / "nowhere")
    with pytest.raises(LayoutError, match="none of train/, validation/, test/"):
        build.build_dataset("msec", tmp_path / "data", tmp_path / "raw")
    assert no_dataset_in(tmp_path / "data")


def test_synthetic_from_folder_deterministic(tmp_path):
    for i in range(5):
        write_image(tmp_path / f"photos/p{i}.png", seed=i)
    kw = dict(min_size=MIN, variants=2, seed=7)
    res = build.build_dataset("synthetic", tmp_path / "d1", tmp_path / "photos", **kw)
    assert res.splits == {"train": 8, "test": 2}  # every 5th photo (p4) held out for test
    a = read_split(tmp_path / "d1", "synthetic", "train")
    assert sorted(a)[:2] == ["p0_v00", "p0_v01"] and "p4_v00" in read_split(tmp_path / "d1", "synthetic", "test")
    ex = a["p1_v01"]
    assert ex["ev_map"].shape == (40, 48) and ex["ev_map"].dtype == np.float16
    assert ex["ev_map"].min() < -0.9 and ex["ev_map"].max() > 0.9
    np.testing.assert_array_equal(ex["target"], np.asarray(Image.open(tmp_path / "photos/p1.png")))
    build.build_dataset("synthetic", tmp_path / "d2", tmp_path / "photos", **kw)
    b = read_split(tmp_path / "d2", "synthetic", "train")
    assert all(np.array_equal(a[k]["input"], b[k]["input"]) for k in a)
    assert not np.array_equal(a["p1_v00"]["input"], a["p1_v01"]["input"])  # variants differ


def test_synthetic_bundled_photos(tmp_path):
    d = synthetic.bundled_photo_dir()
    assert all((d / n).is_file() for n in synthetic.BUNDLED_TRAIN + synthetic.BUNDLED_TEST)
    res = build.build_dataset("synthetic", tmp_path / "data", None, variants=1)
    assert res.splits == {"train": 4, "test": 1}
    test = read_split(tmp_path / "data", "synthetic", "test")
    assert list(test) == ["chelsea_v00"]
    # 451 x 300 at half size (Lanczos) is 226 x 150, centre-cropped to multiples of 4
    assert test["chelsea_v00"]["input"].shape == (148, 224, 3)
    with Image.open(d / "chelsea.png") as im:
        half = np.asarray(im.convert("RGB").resize((226, 150), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(test["chelsea_v00"]["target"], half[1:149, 1:225])


# ---- bad input: clear error naming the file, or a counted and listed skip ------------------------

def _good_pairs(raw: pathlib.Path, n=2):
    for i in range(n):
        write_image(raw / f"input/ok{i}.png", seed=i)
        write_image(raw / f"target/ok{i}.png", seed=10 + i)


def _make_bad(case: str, raw: pathlib.Path) -> str:
    """Add one bad pair to a paired layout; return the file that should be named."""
    if case == "zero_byte":
        write_image(raw / "target/bad.png")
        (raw / "input/bad.png").write_bytes(b"")
        return "input/bad.png"
    if case == "truncated_jpeg":
        write_image(raw / "input/bad.png")
        write_image(raw / "target/bad.jpg")
        (raw / "target/bad.jpg").write_bytes((raw / "target/bad.jpg").read_bytes()[:300])
        return "target/bad.jpg"
    if case == "not_an_image":
        (raw / "input/bad.jpg").write_text("<html>not an image</html>")
        write_image(raw / "target/bad.png")
        return "input/bad.jpg"
    if case == "mismatched_sizes":
        write_image(raw / "input/bad.png", 40, 48)
        write_image(raw / "target/bad.png", 40, 52)
        return "input/bad.png"
    if case == "smaller_than_crop":
        write_image(raw / "input/bad.png", 20, 24)
        write_image(raw / "target/bad.png", 20, 24)
        return "input/bad.png"
    if case == "no_target":
        write_image(raw / "input/bad.png")
        return "input/bad.png"
    raise AssertionError(case)


BAD_CASES = ["zero_byte", "truncated_jpeg", "not_an_image", "mismatched_sizes", "smaller_than_crop", "no_target"]
REASONS = {"zero_byte": "file is empty", "truncated_jpeg": "corrupt or truncated", "not_an_image":
           "not a readable image", "mismatched_sizes": "differs from its target",
           "smaller_than_crop": "smaller than the minimum side 32", "no_target": "input has no target"}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_fails_clearly_or_is_skipped(case, tmp_path, capsys):
    raw = tmp_path / "raw"
    _good_pairs(raw)
    bad = _make_bad(case, raw)
    args = ["--dataset", "paired", "--manual_dir", str(raw), "--data_dir", str(tmp_path / "data"),
            "--min_size", str(MIN)]
    assert build.main(args) == 2
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("error: "))
    assert line.startswith(f"error: {raw / bad}: ") and REASONS[case] in line and "--skip_bad" in line
    assert "Traceback" not in err
    assert no_dataset_in(tmp_path / "data")

    assert build.main(args + ["--skip_bad"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["dataset"] == "paired" and summary["splits"] == {"train": 2}
    assert summary["skipped"] == [bad] and summary["skipped_pairs"] == 1
    assert REASONS[case] in summary["skip_reasons"][bad] and f"skipped {bad}" in err
    info = json.loads((tmp_path / "data/paired/1.0.0/build_info.json").read_text())
    assert info["skipped"] == [bad]


def test_split_with_only_bad_pairs_fails(tmp_path):
    (tmp_path / "raw/input").mkdir(parents=True), (tmp_path / "raw/target").mkdir()
    (tmp_path / "raw/input/a.png").write_bytes(b"")
    write_image(tmp_path / "raw/target/a.png")
    with pytest.raises(LayoutError, match="no usable pairs left"):
        build.build_dataset("paired", tmp_path / "data", tmp_path / "raw", skip_bad=True, min_size=MIN)
    assert no_dataset_in(tmp_path / "data")


def test_convertible_images_are_built_as_8bit_rgb(tmp_path):
    raw = tmp_path / "raw"
    rgb = write_image(raw / "target/gray.png")
    (raw / "input").mkdir()
    gray = rgb[..., 0]
    Image.fromarray(gray).save(raw / "input/gray.png")
    Image.fromarray(np.concatenate([rgb, np.full((40, 48, 1), 9, np.uint8)], -1)).save(raw / "input/rgba.png")
    write_image(raw / "target/rgba.png")
    g16 = gray.astype(np.uint16) * 256 + 100
    Image.fromarray(g16).save(raw / "input/g16.png")
    write_image(raw / "target/g16.png")
    Image.fromarray(rgb).convert("CMYK").save(raw / "input/cmyk.jpg", quality=95)
    write_image(raw / "target/cmyk.png")
    res = build.build_dataset("paired", tmp_path / "data", raw, min_size=MIN)
    assert res.splits == {"train": 4} and res.skipped == []
    got = read_split(tmp_path / "data", "paired", "train")
    for name, ex in got.items():
        assert ex["input"].shape == (40, 48, 3) and ex["input"].dtype == np.uint8, name
    np.testing.assert_array_equal(got["gray"]["input"], np.repeat(gray[..., None], 3, -1))
    np.testing.assert_array_equal(got["rgba"]["input"], rgb)
    np.testing.assert_array_equal(got["g16"]["input"], np.repeat(gray[..., None], 3, -1))  # (g*256+100)>>8 == g
    np.testing.assert_array_equal(got["cmyk"]["input"], np.asarray(images.load_rgb(raw / "input/cmyk.jpg")))


def test_rebuild_replaces_and_cli_subprocess_last_line_is_json(tmp_path):
    raw = tmp_path / "raw"
    _good_pairs(raw, 1)
    build.build_dataset("paired", tmp_path / "data", raw, min_size=MIN)
    _good_pairs(raw, 3)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "recnet_jax.data.build", "--dataset", "paired", "--manual_dir",
                           str(raw), "--data_dir", str(tmp_path / "data"), "--min_size", str(MIN)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == {"dataset": "paired", "name": "paired", "version": "1.0.0", "splits": {"train": 3},
                       "skipped": [], "skipped_pairs": 0, "skip_reasons": {}}
    assert len(read_split(tmp_path / "data", "paired", "train")) == 3
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["paired"]  # no temp dirs left
