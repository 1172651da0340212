"""recnet_jax.data.images: every odd or bad file is converted to 8-bit RGB or named in a clear error."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from recnet_jax.data import images
from recnet_jax.data.images import BadInputError


def _rgb(h=40, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png16(path, arr):
    """Write a 16-bit PNG (gray [H, W] or RGB [H, W, 3] uint16) by hand: Pillow cannot write 48-bit."""
    h, w = arr.shape[:2]
    color_type = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_rgb_png_and_jpeg_load_unchanged(tmp_path):
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "a.png")
    out = images.load_rgb(tmp_path / "a.png")
    assert out.mode == "RGB" and np.array_equal(np.asarray(out), a)
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=90)
    assert np.array_equal(np.asarray(images.load_rgb(tmp_path / "a.jpg")),
                          np.asarray(Image.open(tmp_path / "a.jpg")))


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(BadInputError, match=r"empty\.png: file is empty \(0 bytes\)") as e:
        images.load_rgb(p)
    assert e.value.path == str(p) and "--skip_bad" in str(e.value)


def test_truncated_jpeg(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match=r"cut\.jpg: corrupt or truncated"):
        images.load_rgb(tmp_path / "cut.jpg")


def test_non_image_with_image_extension(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is a text file, not a JPEG\n")
    with pytest.raises(BadInputError, match=r"notes\.jpg: not a readable image"):
        images.load_rgb(p)


def test_missing_file(tmp_path):
    with pytest.raises(BadInputError, match=r"gone\.png: cannot read"):
        images.load_rgb(tmp_path / "gone.png")


def test_grayscale_replicated(tmp_path):
    g = _rgb()[..., 0]
    Image.fromarray(g).save(tmp_path / "g.png")
    out = np.asarray(images.load_rgb(tmp_path / "g.png"))
    assert out.shape == (40, 48, 3) and all(np.array_equal(out[..., c], g) for c in range(3))


def test_rgba_alpha_dropped(tmp_path):
    a = _rgb()
    alpha = np.full((40, 48, 1), 7, np.uint8)
    Image.fromarray(np.concatenate([a, alpha], -1)).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "RGBA"
    assert np.array_equal(np.asarray(images.load_rgb(tmp_path / "a.png")), a)


def test_palette_with_transparency(tmp_path):
    p = Image.fromarray(_rgb()).quantize(16)
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    out = images.load_rgb(tmp_path / "p.png")
    assert out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(Image.open(tmp_path / "p.png").convert("RGBA"))[..., :3])


def test_16bit_gray_and_rgb_keep_high_byte(tmp_path):
    rng = np.random.default_rng(1)
    g16 = rng.integers(0, 65536, (40, 48)).astype(np.uint16)
    rgb16 = rng.integers(0, 65536, (40, 48, 3)).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    _png16(tmp_path / "rgb16.png", rgb16)
    g = np.asarray(images.load_rgb(tmp_path / "g16.png"))
    assert g.dtype == np.uint8 and np.array_equal(g, np.repeat((g16 >> 8).astype(np.uint8)[..., None], 3, -1))
    # Pillow's own convert("RGB") would clip I;16 at 255: make sure we did not do that.
    assert g.max() > 200 and g.min() < 50
    assert np.array_equal(np.asarray(images.load_rgb(tmp_path / "rgb16.png")), (rgb16 >> 8).astype(np.uint8))


def test_cmyk_jpeg_converted(tmp_path):
    cmyk = np.random.default_rng(2).integers(0, 256, (40, 48, 4), dtype=np.uint8)
    Image.frombytes("CMYK", (48, 40), cmyk.tobytes()).save(tmp_path / "c.jpg", quality=100)
    stored = np.asarray(Image.open(tmp_path / "c.jpg")).astype(np.int64)  # the decoded CMYK values
    out = np.asarray(images.load_rgb(tmp_path / "c.jpg")).astype(np.int64)
    expected = np.round((255 - stored[..., :3]) * (255 - stored[..., 3:]) / 255)  # documented formula
    assert out.shape == (40, 48, 3) and np.array_equal(out, expected)


def test_exif_orientation_applied(tmp_path):
    a = _rgb(40, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(a).save(tmp_path / "r.jpg", quality=95, exif=exif)
    out = images.load_rgb(tmp_path / "r.jpg")
    assert out.size == (40, 48)  # W x H swapped
    stored = np.asarray(Image.open(tmp_path / "r.jpg"))  # decoded, not rotated
    assert np.array_equal(np.asarray(out), np.rot90(stored, k=-1))


def test_check_pair_mismatch_and_small(tmp_path):
    a, b = Image.fromarray(_rgb(40, 48)), Image.fromarray(_rgb(40, 44))
    with pytest.raises(BadInputError, match=r"in\.png: size 48x40 .* differs from its target .*gt\.png \(44x40\)"):
        images.check_pair(tmp_path / "in.png", a, tmp_path / "gt.png", b)
    with pytest.raises(BadInputError, match=r"in\.png: image is 48x40 .* smaller than the minimum side 41"):
        images.check_pair(tmp_path / "in.png", a, tmp_path / "gt.png", a, min_size=41)
    images.check_pair(tmp_path / "in.png", a, tmp_path / "gt.png", a, min_size=40)  # no error


def test_listing_ignores_non_images_and_rejects_stem_clash(tmp_path):
    for n in ("b.png", "a.JPG", ".hidden.png", "readme.txt", "list"):
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in images.list_images(tmp_path)] == ["a.JPG", "b.png"]
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(images.LayoutError, match="share the stem 'a'"):
        images.index_by_stem(images.list_images(tmp_path))
