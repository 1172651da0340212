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
"""

from __future__ import annotations

import os
import pathlib
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
