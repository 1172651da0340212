"""Synthetic mixed exposure: both over- and under-exposed regions, linear-light exposure, determinism."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from recnet_jax.data import build, synthesis, synthetic

CLEAN = dataclasses.replace(synthesis.SynthesisConfig(), noise=False, jpeg_prob=0.0)


@pytest.fixture(scope="module")
def photo():
    """A real bundled photograph (astronaut), downsized to 128x128 to keep the tests fast."""
    path = synthetic.bundled_photo_dir() / "astronaut.png"
    return np.asarray(Image.open(path).convert("RGB").resize((128, 128), Image.Resampling.BILINEAR))


def test_srgb_curves():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(synthesis.linear_to_srgb(synthesis.srgb_to_linear(x)), x, atol=2e-6)
    assert synthesis.srgb_to_linear(np.float32(0.5)) == pytest.approx(0.21404, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pairs_have_both_over_and_under_exposed_regions(photo, seed):
    pair = synthesis.synthesize_pair(photo, seed)
    ev = pair.ev_map.astype(np.float32)
    assert ev.shape == photo.shape[:2] and pair.ev_map.dtype == np.float16
    assert ev.min() >= -2.5 and ev.max() <= 2.5
    frac = synthesis.SynthesisConfig().region_fraction
    assert (ev <= -1.0).mean() >= frac - 0.01 and (ev >= 1.0).mean() >= frac - 0.01
    diff = pair.input.astype(np.float32).mean(-1) - pair.target.astype(np.float32).mean(-1)
    assert diff[ev <= -1.0].mean() < -15  # clearly darker where the map is under-exposing
    assert diff[ev >= 1.0].mean() > 15    # clearly brighter where it is over-exposing
    # Smooth: neighbouring pixels differ by little (a 128-px image holds at most a 5x5 grid).
    steps = np.concatenate([np.abs(np.diff(ev, axis=0)).ravel(), np.abs(np.diff(ev, axis=1)).ravel()])
    assert steps.max() < 1.0 and steps.mean() < 0.1
    np.testing.assert_array_equal(pair.target, photo)


def test_exposure_is_applied_in_linear_light(photo):
    pair = synthesis.synthesize_pair(photo, 5, CLEAN)
    lin = synthesis.srgb_to_linear(photo / 255.0) * np.exp2(pair.ev_map.astype(np.float32))[..., None]
    expected = np.round(synthesis.linear_to_srgb(np.clip(lin, 0, 1)) * 255)
    assert pair.jpeg_quality == 0
    assert np.abs(pair.input.astype(int) - expected).max() <= 1
    # Not a gamma-space scaling: that would give a visibly different image.
    gamma_space = np.clip(photo * np.exp2(pair.ev_map.astype(np.float32))[..., None], 0, 255)
    assert np.abs(pair.input - gamma_space).mean() > 5


def test_deterministic_by_seed_and_options(photo):
    a, b = synthesis.synthesize_pair(photo, (3, 9)), synthesis.synthesize_pair(photo, (3, 9))
    np.testing.assert_array_equal(a.input, b.input)
    np.testing.assert_array_equal(a.ev_map, b.ev_map)
    c = synthesis.synthesize_pair(photo, (3, 10))
    assert not np.array_equal(a.ev_map, c.ev_map)
    noisy = synthesis.synthesize_pair(photo, 5, dataclasses.replace(CLEAN, noise=True, read_noise=(0.01, 0.01)))
    clean = synthesis.synthesize_pair(photo, 5, CLEAN)
    np.testing.assert_array_equal(noisy.ev_map, clean.ev_map)
    assert np.abs(noisy.input.astype(int) - clean.input).mean() > 0.5
    jpg = synthesis.synthesize_pair(photo, 5, dataclasses.replace(CLEAN, jpeg_prob=1.0, jpeg_quality=(60, 60)))
    assert jpg.jpeg_quality == 60 and not np.array_equal(jpg.input, clean.input)


def test_built_dataset_stores_the_ev_map_that_made_the_input(tmp_path, photo):
    (tmp_path / "photos/train").mkdir(parents=True)
    Image.fromarray(photo[:64, :80]).save(tmp_path / "photos/train/face.png")
    build.build_dataset("synthetic", tmp_path / "data", tmp_path / "photos", min_size=32, variants=1, seed=11)
    ex = tfds.data_source("synthetic", split="train", data_dir=str(tmp_path / "data"), download=False)[0]
    assert ex["name"] == b"face_v00"
    again = synthesis.synthesize_pair(photo[:64, :80], (11, zlib.crc32(b"face"), 0, 0))
    np.testing.assert_array_equal(ex["ev_map"], again.ev_map)
    np.testing.assert_array_equal(ex["input"], again.input)
    np.testing.assert_array_equal(ex["target"], photo[:64, :80])


def test_scale_resizes_the_photos_before_synthesis(tmp_path, photo):
    """--scale 0.5: the stored target is the Lanczos half-size photo (cropped to multiples of 4) and
    the input is synthesized from it; a factor outside (0, 1] is refused."""
    (tmp_path / "photos/train").mkdir(parents=True)
    Image.fromarray(photo[:64, :88]).save(tmp_path / "photos/train/face.png")
    build.build_dataset("synthetic", tmp_path / "data", tmp_path / "photos", min_size=16, variants=1,
                        seed=11, scale=0.5)
    ex = tfds.data_source("synthetic", split="train", data_dir=str(tmp_path / "data"), download=False)[0]
    half = np.asarray(Image.fromarray(photo[:64, :88]).resize((44, 32), Image.Resampling.LANCZOS))
    half = synthetic.crop_to_multiple(half)
    assert ex["target"].shape == (32, 44, 3)
    np.testing.assert_array_equal(ex["target"], half)
    again = synthesis.synthesize_pair(half, (11, zlib.crc32(b"face"), 0, 0))
    np.testing.assert_array_equal(ex["input"], again.input)
    assert synthetic.Synthetic(data_dir=str(tmp_path / "x")).scale == synthetic.BUNDLED_SCALE == 0.5
    with pytest.raises(ValueError, match="--scale 0.0"):
        synthetic.Synthetic(source_dir=tmp_path / "photos", scale=0.0)
