"""Reading and validating image files for the dataset builders: one place for every odd case.

Every builder opens its files through :func:`load_rgb` and checks pairs with :func:`check_pair`, so
all datasets convert odd images the same way and fail with the same clear messages.

Conversions to 8-bit RGB (H x W x 3 uint8), applied to input and target alike:

* EXIF orientation is applied first (``PIL.ImageOps.exif_transpose``), as OpenCV's ``imread`` does
  in the released RECNet loader.
* ``RGB``: kept as stored. An embedded ICC profile is ignored (pixel values are used as they are).
* Grayscale ``L`` / ``1``: the gray value is copied to R, G and B.
* Alpha (``RGBA``, ``LA``, ``PA``, palette images with transparency): the alpha channel is
  discarded; the colour channels are kept as stored (not composited over any background).
* Palette ``P``: expanded through its palette.
* 16-bit (``I;16*`` grayscale, 16-bit RGB/RGBA PNG): the high byte is kept, ``v8 = v16 >> 8``
  (``floor(v / 256)``). Pillow itself reads 16-bit RGB PNGs this way; 16-bit grayscale is done
  the same way here for consistency (max error < 1 level of 8-bit). ``I`` (32-bit integer) images
  whose values fit in 16 bits are treated as 16-bit; others are rejected.
* ``CMYK`` (e.g. CMYK JPEGs, Adobe-inverted ones included): Pillow's conversion
  ``R = round((255 - C) * (255 - K) / 255)`` (likewise G from M, B from Y). Embedded ICC
  profiles are not applied.
* Anything else Pillow can open (``YCbCr``, ``LAB``, ``HSV``) goes through ``Image.convert("RGB")``;
  float images (``F``) are rejected, since their range is unknown.

Bad files raise :class:`BadInputError` whose message names the file, says what is wrong and what
to do. Builders turn it into a counted skip with ``--skip_bad``.

Photos to enhance (:func:`load_photo`, :func:`save_png`) keep more of the file than the builders do:
16-bit stays 16-bit (16-bit RGB/RGBA PNGs included, whose low bytes Pillow would drop), alpha is
returned beside the colour, and images above a pixel budget are downsized (JPEGs already while
decoding) or, far above it, refused before decoding.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import struct
import warnings
import zlib
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Extensions (lower case) that the builders treat as images. Other files (README, .DS_Store, lists)
# are ignored.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

SKIP_HINT = "fix or remove the file, or rerun the build with --skip_bad to skip it (it will be listed)"


class BadInputError(ValueError):
    """A file that cannot become a training/eval example. ``str(err)`` is a complete message.

    Attributes:
      path: the offending file (for a pair: the file at fault, or the input with no target).
      reason: short description of the problem, without the path.
    """

    def __init__(self, path: os.PathLike | str, reason: str, hint: str = SKIP_HINT):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}; {hint}")


class LayoutError(ValueError):
    """The manual folder does not have the dataset's expected layout (not skippable)."""


def is_image_file(path: os.PathLike | str) -> bool:
    """True for non-hidden files whose extension is in :data:`IMAGE_EXTENSIONS`."""
    name = os.path.basename(str(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: os.PathLike | str) -> list[pathlib.Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name."""
    folder = pathlib.Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def image_stem(path: os.PathLike | str) -> str:
    """File name without its (last) extension: ``a_P1.5.JPG`` -> ``a_P1.5``."""
    return os.path.splitext(os.path.basename(str(path)))[0]


def index_by_stem(paths: Iterable[pathlib.Path]) -> dict[str, pathlib.Path]:
    """Map stem -> path. Two files with one stem (``x.png`` and ``x.jpg``) raise a LayoutError."""
    out: dict[str, pathlib.Path] = {}
    for p in paths:
        stem = image_stem(p)
        if stem in out:
            raise LayoutError(f"{p}: two images share the stem {stem!r} ({out[stem].name} and {p.name}); "
                              "pairs are matched by stem, so keep only one of them")
        out[stem] = p
    return out


def _to_rgb(im: Image.Image, path: str) -> Image.Image:
    """Convert an opened, loaded PIL image to 8-bit RGB following the module docstring's rules."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise BadInputError(path, f"32-bit integer image with values outside 0..65535 "
                                      f"({arr.min()}..{arr.max()}); cannot convert it to 8-bit RGB")
        gray = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))
    if mode == "F":
        raise BadInputError(path, "floating-point image (mode F) of unknown range; save it as 8- or "
                                  "16-bit PNG")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # expand the palette first so transparency is not applied as colour
    return im.convert("RGB")  # L, 1, LA, RGBA, RGBX, P, PA, CMYK, YCbCr, LAB, HSV


def load_rgb(path: os.PathLike | str) -> Image.Image:
    """Open an image file and return it as a fully decoded 8-bit RGB ``PIL.Image``.

    Args:
      path: the image file.

    Returns:
      A mode ``"RGB"`` image (as array: [H, W, 3] uint8), EXIF orientation applied, converted as the
      module docstring describes.

    Raises:
      BadInputError: the file is empty, missing, not an image, truncated/corrupt, or of an
        unconvertible mode. The message names the file.
    """
    path = str(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise BadInputError(path, f"cannot read the file ({e.strerror})") from None
    if size == 0:
        raise BadInputError(path, "file is empty (0 bytes)")
    try:
        with Image.open(path) as im:
            im.load()  # decode fully now: truncated files fail here, not later in tfds
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im, path)
            rgb.load()
    except BadInputError:
        raise
    except UnidentifiedImageError:
        raise BadInputError(path, "not a readable image (Pillow cannot identify the format; "
                                  "is it an image at all?)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadInputError(path, f"corrupt or truncated image ({e})") from None
    if rgb.width == 0 or rgb.height == 0:
        raise BadInputError(path, "image has zero width or height")
    return rgb


def check_pair(input_path: os.PathLike | str, inp: Image.Image,
               target_path: os.PathLike | str, tgt: Image.Image, *, min_size: int = 0) -> None:
    """Raise :class:`BadInputError` unless ``inp`` and ``tgt`` form a usable pair.

    Args:
      input_path, target_path: the files, for the message.
      inp, tgt: the loaded RGB images.
      min_size: both sides of the images must be at least this many pixels (the training crop);
        0 disables the check.
    """
    if inp.size != tgt.size:
        raise BadInputError(input_path, f"size {inp.width}x{inp.height} (WxH) differs from its target "
                                        f"{target_path} ({tgt.width}x{tgt.height}); input and target "
                                        "must have the same size")
    if min(inp.size) < min_size:
        raise BadInputError(input_path, f"image is {inp.width}x{inp.height} (WxH), smaller than the "
                                        f"minimum side {min_size} (the training crop); pass a smaller "
                                        "--min_size if you train with a smaller crop")


# ---- photos for enhance: 8/16-bit, alpha, orientation, size limits ------------------------------

PHOTO_HINT = "fix or replace the file"
_ORIENTATION = 0x0112
_PNG_16BIT_RAWMODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}


@dataclasses.dataclass
class Photo:
    """A decoded photo in its displayed orientation.

    Attributes:
      rgb: [H, W, 3] uint8, or uint16 for 16-bit files.
      alpha: [H, W] of the same dtype, or None when the file has no transparency.
      mode: the stored Pillow mode, ``RGB;16`` / ``RGBA;16`` for 16-bit colour PNGs.
      has_icc: the file embeds an ICC colour profile (ignored: values are used as stored).
      stored_size: (W, H) as stored in the file, before orientation and downsizing.
      downsized_from: (W, H) displayed size before downsizing to ``max_pixels``, or None.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    mode: str
    has_icc: bool
    stored_size: tuple[int, int]
    downsized_from: tuple[int, int] | None = None

    @property
    def bits(self) -> int:
        return 16 if self.rgb.dtype == np.uint16 else 8


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Applies an EXIF orientation (1..8) to [H, W, ...] as ``PIL.ImageOps.exif_transpose`` does."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def _png16_low_bytes(path: str, rawmode: str) -> np.ndarray:
    """The low bytes of a 16-bit colour PNG: the same zip stream unpacked with the little-endian
    rawmode (which keeps the second byte of each sample)."""
    with Image.open(path) as im:
        tile = im.tile[0]
        im.tile = [tile._replace(args=_PNG_16BIT_RAWMODES[rawmode])]
        im.load()
        return np.asarray(im)


def _decode_photo(im: Image.Image, path: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(rgb, alpha, mode) of an opened, not yet loaded image, as stored (no orientation)."""
    mode = im.mode
    rawmode = im.tile[0].args if im.format == "PNG" and len(im.tile) == 1 else None
    im.load()
    if isinstance(rawmode, str) and rawmode in _PNG_16BIT_RAWMODES:
        hi = np.asarray(im).astype(np.uint16)
        both = (hi << 8) | _png16_low_bytes(path, rawmode)
        return both[..., :3], (both[..., 3] if both.shape[-1] == 4 else None), mode + ";16"
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise BadInputError(path, f"32-bit integer image with values outside 0..65535 "
                                      f"({arr.min()}..{arr.max()}); cannot read it as 16-bit", PHOTO_HINT)
        gray = arr.astype(np.uint16)
        return np.repeat(gray[..., None], 3, axis=-1), None, mode
    if mode == "F":
        raise BadInputError(path, "floating-point image (mode F) of unknown range; save it as 8- or "
                                  "16-bit PNG", PHOTO_HINT)
    if "A" in im.getbands() or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))   # LA, PA, P with transparency, RGBa, La
        return rgba[..., :3], rgba[..., 3], mode
    return np.asarray(im.convert("RGB")), None, mode   # L, 1, P, CMYK, YCbCr, LAB, HSV


def resize_array(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W] or [H, W, C] uint8/uint16 -> (W, H) = ``size``, Lanczos per channel in float."""
    chans = arr[..., None] if arr.ndim == 2 else arr
    top = np.iinfo(arr.dtype).max
    out = [np.asarray(Image.fromarray(chans[..., c].astype(np.float32)).resize(
        size, Image.Resampling.LANCZOS)) for c in range(chans.shape[-1])]
    res = np.clip(np.round(np.stack(out, -1)), 0, top).astype(arr.dtype)
    return res[..., 0] if arr.ndim == 2 else res


def fit_size(w: int, h: int, max_pixels: int) -> tuple[int, int]:
    """The largest (W', H') with the aspect of (w, h) and W' * H' <= max_pixels."""
    s = math.sqrt(max_pixels / (w * h))
    return max(1, math.floor(w * s)), max(1, math.floor(h * s))


def load_photo(path: os.PathLike | str, *, max_pixels: int | None = None,
               refuse_pixels: int | None = None, too_large_hint: str = PHOTO_HINT) -> Photo:
    """Opens a photo for enhancement: 8- or 16-bit RGB, alpha apart, displayed orientation.

    Conversions: as :func:`load_rgb` (grayscale to RGB, palette expanded, CMYK through Pillow), but
    16-bit files stay 16-bit (uint16) and an alpha channel is returned instead of dropped.

    Args:
      path: the file.
      max_pixels: photos with more pixels are downsized (Lanczos) to fit, keeping the aspect; a
        JPEG is already decoded at a reduced scale (Pillow's draft mode). None: never.
      refuse_pixels: photos with more pixels are refused from their header, before decoding
        (decompression bombs). Pillow's own bomb limit (about 179 MP) applies in any case.
      too_large_hint: the fix that the refusal message suggests.

    Returns:
      a :class:`Photo`.

    Raises:
      BadInputError: empty, unreadable, truncated, unconvertible or too large; names the file.
    """
    path = str(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise BadInputError(path, f"cannot read the file ({e.strerror})", PHOTO_HINT) from None
    if size == 0:
        raise BadInputError(path, "file is empty (0 bytes)", PHOTO_HINT)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            with Image.open(path) as im:
                w, h = im.size
                if refuse_pixels is not None and w * h > refuse_pixels:
                    raise BadInputError(path, f"{w}x{h} pixels ({w * h / 1e6:.1f} MP) is more than "
                                              f"{refuse_pixels / 1e6:g} MP; refused before decoding "
                                              "(a decompression bomb or an absurdly large image)",
                                        too_large_hint)
                if max_pixels is not None and w * h > max_pixels and im.format == "JPEG":
                    im.draft(im.mode, fit_size(w, h, max_pixels))   # decodes at >= that size
                rgb, alpha, mode = _decode_photo(im, path)
                orientation = im.getexif().get(_ORIENTATION, 1)
                has_icc = bool(im.info.get("icc_profile"))
    except BadInputError:
        raise
    except Image.DecompressionBombError as e:
        raise BadInputError(path, f"refused before decoding: {e}", too_large_hint) from None
    except UnidentifiedImageError:
        raise BadInputError(path, "not a readable image (Pillow cannot identify the format; "
                                  "is it an image at all?)", PHOTO_HINT) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadInputError(path, f"corrupt or truncated image ({e})", PHOTO_HINT) from None
    if rgb.size == 0:
        raise BadInputError(path, "image has zero width or height", PHOTO_HINT)
    rgb = orient(rgb, orientation)
    alpha = None if alpha is None else orient(alpha, orientation)
    displayed = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    if max_pixels is not None and rgb.shape[0] * rgb.shape[1] > max_pixels:
        target = fit_size(rgb.shape[1], rgb.shape[0], max_pixels)
        rgb = resize_array(rgb, target)
        alpha = None if alpha is None else resize_array(alpha, target)
    downsized = None if (rgb.shape[1], rgb.shape[0]) == displayed else displayed
    return Photo(rgb=rgb, alpha=alpha, mode=mode, has_icc=has_icc, stored_size=(w, h),
                 downsized_from=downsized)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png16(arr: np.ndarray) -> bytes:
    """[H, W, 3|4] uint16 -> the bytes of a 16-bit RGB/RGBA PNG (Pillow cannot write 48/64-bit).
    Rows use the 'Up' filter (vectorised)."""
    h, w, c = arr.shape
    raw = np.ascontiguousarray(arr, dtype=">u2").view(np.uint8).reshape(h, w * c * 2)
    up = raw.copy()
    up[1:] -= raw[:-1]                                    # uint8 arithmetic wraps mod 256
    rows = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def save_png(path: os.PathLike | str, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
    """Writes [H, W, 3] (plus optional alpha [H, W]) uint8 or uint16, or [H, W] uint8, as PNG."""
    arr = rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=-1)
    if arr.dtype == np.uint16:
        with open(path, "wb") as f:
            f.write(encode_png16(arr))
    else:
        Image.fromarray(np.asarray(arr, np.uint8)).save(path, format="PNG")
