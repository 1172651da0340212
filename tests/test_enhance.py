"""enhance: odd and broken files in one folder, official .npz weights, the lean path, photo reading,
weights resolution and the one-line error for a .pth that is not a checkpoint."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image, ImageOps

import recnet_jax
from recnet_jax import checkpointing, convert, enhance, inference, weights
from recnet_jax.data import images
from recnet_jax.data.images import BadInputError


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png16_by_hand(path, arr):
    """A 16-bit RGB PNG (filter 0), written independently of images.encode_png16."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def small():
    return recnet_jax.RECNet(num_blocks=1, norm_variant="official", rngs=nnx.Rngs(3))


@pytest.fixture(scope="module")
def npz(small, tmp_path_factory):
    return str(convert.save_official(convert.to_official(small),
                                     tmp_path_factory.mktemp("w") / "recnet.npz"))


def _model_api(model, rgb):
    """The corrected image through the model API (jitted model(x).image), rounded as the release."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x).image)
    top = np.iinfo(rgb.dtype).max
    out = np.asarray(fn(state, jnp.asarray(rgb[None], jnp.float32) / top))[0]
    return np.round(np.clip(out, 0, 1) * top).astype(rgb.dtype)


def _folder(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "empty.jpg").write_bytes(b"")
    Image.fromarray(_rgb(40, 48, 1)).save(d / "whole.jpg", quality=90)
    (d / "trunc.jpg").write_bytes((d / "whole.jpg").read_bytes()[:300])
    (d / "whole.jpg").unlink()
    (d / "notes.png").write_text("not an image\n")
    exif = Image.Exif()
    exif[0x0112] = 6   # displayed rotated by 90 degrees clockwise
    Image.fromarray(_rgb(40, 56, 2)).save(d / "rotated.jpg", quality=92, exif=exif)
    rgba = np.concatenate([_rgb(36, 44, 3), np.arange(36 * 44, dtype=np.uint8).reshape(36, 44, 1)], -1)
    Image.fromarray(rgba).save(d / "alpha.png")
    deep = np.random.default_rng(4).integers(0, 65536, (32, 40, 3), dtype=np.uint16)
    _png16_by_hand(d / "deep.png", deep)
    return d, rgba, deep


def test_folder_with_broken_and_odd_files(tmp_path, small, npz, capsys):
    d, rgba, deep = _folder(tmp_path)
    before = _digest(d)
    out = tmp_path / "out"
    code = enhance.main(enhance.parse_args(["recnet-enhance", str(d), "--checkpoint", npz,
                                            "--out", str(out), "--save_mask"]))
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and summary["processed"] == 3 and summary["failed"] == 3
    failed = {f["path"].split("/")[-1]: f["reason"] for f in summary["failures"]}
    assert set(failed) == {"empty.jpg", "trunc.jpg", "notes.png"}
    assert "0 bytes" in failed["empty.jpg"] and "truncated" in failed["trunc.jpg"]
    assert "not a readable image" in failed["notes.png"]
    assert _digest(d) == before                       # every input byte-identical
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}{s}.png" for n in ("rotated", "alpha", "deep") for s in ("", "_mask"))
    # EXIF: the output has the displayed orientation and size, and the pixels of the model API.
    with Image.open(d / "rotated.jpg") as im:
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    with Image.open(out / "rotated.png") as im:
        assert im.size == (40, 56) and im.mode == "RGB"
        assert np.array_equal(np.asarray(im), _model_api(small, shown))
    with Image.open(out / "rotated_mask.png") as im:
        assert im.size == (40, 56) and im.mode == "L"
    # RGBA keeps its alpha; 16-bit in gives 16-bit out.
    with Image.open(out / "alpha.png") as im:
        assert im.mode == "RGBA" and np.array_equal(np.asarray(im)[..., 3], rgba[..., 3])
        assert np.array_equal(np.asarray(im)[..., :3], _model_api(small, rgba[..., :3]))
    back = images.load_photo(out / "deep.png")
    assert back.bits == 16 and back.rgb.shape == (32, 40, 3)
    assert np.array_equal(back.rgb, _model_api(small, deep))


def test_out_folder_equal_to_an_input_folder_is_refused(tmp_path, npz, capsys):
    d, _, _ = _folder(tmp_path)
    before = _digest(d)
    code = enhance.main(enhance.parse_args(["recnet-enhance", str(d / "alpha.png"),
                                            "--checkpoint", npz, "--out", str(d)]))
    assert code == 2 and "holds input photos" in capsys.readouterr().out
    assert _digest(d) == before


def test_lean_path_equals_the_single_program(small):
    x = jnp.asarray(np.random.default_rng(0).random((2, 24, 36, 3), np.float32))
    a_img, a_mask = inference.predict(small, x, lean=False)
    b_img, b_mask = inference.predict_lean(small, x, rows=8)     # 3 strips per pass, 1 shifted
    np.testing.assert_allclose(np.asarray(b_img), np.asarray(a_img), atol=1e-5)
    np.testing.assert_allclose(np.asarray(b_mask), np.asarray(a_mask), atol=1e-6)


# ---- photo reading (no model) ----------------------------------------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_as_pillow(orientation):
    a = _rgb(5, 7, orientation)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    want = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(images.orient(a, orientation), want)


def test_photo_16bit_round_trip_large_refused_and_downsized(tmp_path):
    deep = np.random.default_rng(1).integers(0, 65536, (9, 11, 4), dtype=np.uint16)
    images.save_png(tmp_path / "d.png", deep[..., :3], deep[..., 3])
    p = images.load_photo(tmp_path / "d.png")
    assert p.mode == "RGBA;16" and np.array_equal(p.rgb, deep[..., :3])
    assert np.array_equal(p.alpha, deep[..., 3])
    # Headers that claim 150 MP (over refuse_pixels) or 900 MP (over Pillow's bomb limit) are
    # refused before any decoding.
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    for w, h, what in ((15000, 10000, "15000x10000 pixels"), (30000, 30000, "decompression bomb")):
        head = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head)
                                            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
        with pytest.raises(BadInputError, match=rf"bomb\.png: .*{what}.*raise --max_megapixels") as e:
            images.load_photo(tmp_path / "bomb.png", refuse_pixels=128_000_000,
                              too_large_hint="raise --max_megapixels")
        assert "refused before decoding" in str(e.value)
    Image.fromarray(_rgb(60, 80)).save(tmp_path / "big.jpg")
    small = images.load_photo(tmp_path / "big.jpg", max_pixels=1200)
    assert small.downsized_from == (80, 60) and small.rgb.shape == (30, 40, 3)


# ---- weights ---------------------------------------------------------------------------------

def test_checkpoint_resolution(tmp_path, small, npz):
    run = tmp_path / "runs" / "demo"
    checkpointing.save_model(run / "model", small)
    (run / "results.json").write_text(json.dumps({"checkpoint": str(run / "model")}))
    for given in (run, run / "model", run / "results.json"):
        assert weights.resolve(given) == ("export", str(run / "model"))
    assert weights.resolve(npz) == ("official", npz)
    (tmp_path / "half" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="without a model/ export"):
        weights.resolve(tmp_path / "half")
    with pytest.raises(FileNotFoundError, match="no such file"):
        weights.resolve(tmp_path / "nope")


def test_pth_that_is_not_a_checkpoint_gives_one_line(tmp_path, capsys):
    pytest.importorskip("torch")
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    real = tmp_path / "real.pth"
    convert.save_official({"extract.weight": np.zeros((8, 3, 3, 3), np.float32)}, real)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(real.read_bytes()[:200])
    for bad in (text, empty, cut):
        assert convert.main(["to-jax", str(bad), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {bad}: not a PyTorch checkpoint"), err
        assert "official RECNet state_dict" in err[0]
    assert convert.main(["vgg16", str(text), "--out", str(tmp_path / "v.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torchvision VGG16" in err[0]
