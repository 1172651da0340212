"""Evaluation: the protocol against an independent numpy PSNR/SSIM, MSEC groups, batching, the CLI.

A tiny MSEC-layout test split (2 scenes x 5 exposure levels, two image sizes, both multiples of 4
so that the release's resize is the identity) is built with the real TFDS builder.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

import recnet_jax
from recnet_jax import checkpointing, evaluate, metrics, sharding
from recnet_jax.data import build

REPO = pathlib.Path(__file__).resolve().parents[1]
LEVELS = ("N1.5", "N1", "0", "P1", "P1.5")
SCENES = {"a0200-t": (40, 48), "a0201-u": (44, 36)}   # name: (H, W)


def _smooth(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)).astype(int)
    return np.clip(arr + rng.integers(-20, 21, arr.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def msec(tmp_path_factory):
    """(data_dir, {input name: (input uint8, target uint8, level)})."""
    root = tmp_path_factory.mktemp("msec")
    raw, truth = root / "raw" / "test", {}
    for s_i, (scene, (h, w)) in enumerate(SCENES.items()):
        targets = {}
        for g_i, expert in enumerate("abcde"):
            d = raw / f"expert_{expert}_testing_set"
            d.mkdir(parents=True, exist_ok=True)
            targets[expert] = _smooth(h, w, 100 * s_i + g_i)
            Image.fromarray(targets[expert]).save(d / f"{scene}.png")
        for e_i, level in enumerate(LEVELS):
            d = raw / "INPUT_IMAGES"
            d.mkdir(parents=True, exist_ok=True)
            inp = _smooth(h, w, 1000 + 10 * s_i + e_i)
            Image.fromarray(inp).save(d / f"{scene}_{level}.png")
            truth[f"{scene}_{level}"] = (inp, targets["c"], level)
    build.build_dataset("msec", root / "data", root / "raw")
    return str(root / "data"), truth


# ---- an independent reference: numpy PSNR and Gaussian SSIM on uint8 images ------------------

def np_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)
    return float(10 * np.log10(1.0 / mse))


def np_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.: 11x11 Gaussian (sigma 1.5) 'valid' windows, C1 = .01^2, C2 = .03^2, on [0, 1];
    the mean over the map and the three channels."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()

    def blur(x):   # separable 'valid' filter over H and W of [H, W, C]
        x = np.apply_along_axis(lambda v: np.convolve(v, g, "valid"), 0, x)
        return np.apply_along_axis(lambda v: np.convolve(v, g, "valid"), 1, x)

    x, y = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return float(m.mean())


def identity(x):
    return x, None


def test_identity_model_matches_numpy_and_groups_count_right(msec):
    data_dir, truth = msec
    res = evaluate.evaluate_fn(identity, "msec", data_dir, split="test")
    assert res["num_images"] == 10 and len(res["per_image"]) == 10
    for rec in res["per_image"]:
        inp, tgt, level = truth[rec["name"]]
        assert rec["exposure"] == level
        want_psnr, want_ssim = np_psnr(inp, tgt), np_ssim(inp, tgt)
        for prefix in ("", "input_"):   # the identity's output is its input
            assert rec[prefix + "psnr"] == pytest.approx(want_psnr, abs=1e-4)
            assert rec[prefix + "ssim"] == pytest.approx(want_ssim, abs=1e-5)
    groups = res["groups"]
    assert list(groups) == list(LEVELS) + ["under", "over", "all"]
    assert {g: groups[g]["count"] for g in groups} == {**{lv: 2 for lv in LEVELS},
                                                      "under": 4, "over": 6, "all": 10}
    over = [r["psnr"] for r in res["per_image"] if r["exposure"] in ("0", "P1", "P1.5")]
    assert groups["over"]["psnr"] == pytest.approx(np.mean(over), abs=1e-9)
    assert groups["all"]["ssim"] == pytest.approx(np.mean([r["ssim"] for r in res["per_image"]]))
    json.dumps({k: v for k, v in res.items() if k != "samples"})
    table = evaluate.results_markdown(res)
    assert "| -1.5 EV | 2 |" in table and "| all | 10 |" in table
    assert "23.69 / 0.870" in table   # the paper's MSEC figure, as quoted


def test_batches_of_one_size_pad_and_drop_the_padding(msec):
    data_dir, _ = msec
    seen = []

    def spy(x):
        seen.append(x.shape)
        return x, None

    one = evaluate.evaluate_fn(identity, "msec", data_dir, split="test")
    three = evaluate.evaluate_fn(spy, "msec", data_dir, split="test", batch_size=3)
    for a, b in zip(one["per_image"], three["per_image"], strict=True):   # float32 sums: 1e-7
        assert (a["name"], a["exposure"]) == (b["name"], b["exposure"])
        assert [a[k] for k in evaluate.SCORES] == pytest.approx([b[k] for k in evaluate.SCORES], abs=1e-6)
    assert all(s[0] == 3 for s in seen)                      # padded to the batch size
    assert {s[1:3] for s in seen} == {(40, 48), (44, 36)}   # one size per batch


def test_evaluate_model_with_mesh_samples_and_cli(msec, tmp_path):
    data_dir, truth = msec
    model = recnet_jax.RECNet(num_blocks=1, rngs=nnx.Rngs(0))
    res = evaluate.evaluate_model(model, "msec", data_dir, split="test", num_samples=2,
                                  mesh=sharding.make_mesh(), progress=False)
    assert res["groups"]["all"]["count"] == 10
    assert len(res["samples"]) == 2
    s = res["samples"][0]
    first = truth[res["per_image"][0]["name"]]
    assert s["input"].dtype == np.uint8 and np.array_equal(s["input"], first[0])
    assert np.array_equal(s["target"], first[1])
    assert s["output"].shape == first[0].shape and s["mask"].shape == first[0].shape[:2]
    # The same scores as the model API + the metrics, image by image.
    out = model(jax.numpy.asarray(first[0][None], jax.numpy.float32) / 255).image
    want = metrics.image_metrics(out, first[1][None])
    assert res["per_image"][0]["psnr"] == pytest.approx(float(want["psnr"][0]), abs=1e-4)
    # The command line, on a training workdir (its model/ export), writes JSON and Markdown.
    checkpointing.save_model(tmp_path / "run" / "model", model)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    if jax.config.jax_compilation_cache_dir:   # the suite's persistent cache (tests/conftest.py)
        env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
    proc = subprocess.run(
        [sys.executable, "-m", "recnet_jax.evaluate", "--config", str(REPO / "configs" / "msec.py"),
         f"--config.data.data_dir={data_dir}", "--checkpoint", str(tmp_path / "run"),
         "--out", str(tmp_path / "eval")], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert written["groups"]["all"]["psnr"] == pytest.approx(res["groups"]["all"]["psnr"], abs=1e-4)
    assert "| under | 4 |" in (tmp_path / "eval" / "results.md").read_text()
    assert "ETA" in proc.stderr
