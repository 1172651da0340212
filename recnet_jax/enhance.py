"""Enhance photos with a RECNet: files, folders or globs in, PNGs out, any size, full resolution.

    recnet-enhance photos/*.jpg --checkpoint runs/demo --out out/    # or python -m recnet_jax.enhance
    out, mask = recnet_jax.enhance.enhance_image(model, photo)        # [H, W, 3] uint8 -> uint8

The model runs on the whole photo, exactly (no seams); big photos go through the staged,
memory-lean path of :mod:`recnet_jax.inference` (about 3 GB peak at 12 MP on CPU, see
``docs/evaluation.md``). Photos of one size share one compiled function.

Command line (``--help`` lists every option):

* ``INPUT...``: files, folders (their image files, not recursive) and globs (quoted or expanded by
  the shell). Files are read by :func:`recnet_jax.data.images.load_photo`: EXIF orientation is
  applied (the output has the displayed orientation and size); grayscale, palette and CMYK become
  RGB; 16-bit files stay 16-bit and give a 16-bit PNG; an alpha channel is kept in the output;
  colour profiles are ignored (one note says so).
* ``--checkpoint``: a training workdir, its ``model/`` export, an official ``.pth``/``.npz``, or
  ``runs/demo/results.json`` (:mod:`recnet_jax.weights`).
* ``--out DIR``: writes ``DIR/<name>.png`` (and ``DIR/<name>_mask.png``, the predicted exposure
  map, with ``--save_mask``). An input is never overwritten: an ``--out`` that is an input folder
  (or the folder of an input file) is refused.
* ``--max_megapixels`` (default 16): larger photos are downsized to it before correction, and the
  output has the reduced size (each one is named in a warning); photos above 8 times it are refused
  from their header, before decoding.
* A file that cannot be read is reported by name with the reason and the others are still
  processed. The last stdout line is a JSON summary (processed, failed, and each failure); the
  exit status is 0 when every photo was processed, 1 when some failed, 2 for a usage error.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import sys

import jax.numpy as jnp
import numpy as np
from absl import app, logging
from absl.flags import argparse_flags

from recnet_jax import inference, progress, runtime, weights
from recnet_jax.data import images

DEFAULT_MAX_MEGAPIXELS = 16.0
REFUSE_FACTOR = 8
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# ---- the array API ---------------------------------------------------------------------------

def enhance_array(model, rgb: np.ndarray, *, lean: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Corrects one photo of 8 or 16 bits.

    Args:
      model: a :class:`recnet_jax.RECNet`.
      rgb: [H, W, 3] uint8 or uint16 RGB.
      lean: the inference path (:func:`recnet_jax.inference.predict`; None: by size).
    Returns:
      (image, mask): image [H, W, 3] of rgb's dtype (rounded half to even, as the release
      quantises), mask [H, W] float32 in (0, 1), the predicted under-exposure map.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected an [H, W, 3] uint8 (or uint16) RGB photo, got {rgb.shape} "
                         f"{rgb.dtype}")
    top = float(np.iinfo(rgb.dtype).max)
    x = jnp.asarray(rgb[None], jnp.float32) / top
    image, mask = inference.predict(model, x, lean=lean)
    del x
    out = np.asarray(image)[0] * np.float32(top)      # host copy; the device image is dropped
    del image
    np.clip(np.round(out, out=out), 0, top, out=out)
    return out.astype(rgb.dtype), np.array(np.asarray(mask)[0, ..., 0])


def enhance_image(model, photo: np.ndarray, *, lean: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Corrects one 8-bit photo: [H, W, 3] uint8 -> ([H, W, 3] uint8, mask [H, W] float32)."""
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[-1] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3] uint8 RGB photo, got {photo.shape} {photo.dtype}")
    return enhance_array(model, photo, lean=lean)


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """[H, W] float in [0, 1] -> uint8 (x255, rounded)."""
    return np.round(np.clip(mask, 0.0, 1.0) * 255.0).astype(np.uint8)


# ---- inputs and outputs ----------------------------------------------------------------------

@dataclasses.dataclass
class Failure:
    path: str
    reason: str


def expand_inputs(args: list[str]) -> tuple[list[str], list[Failure]]:
    """Files, folders (their image files) and globs -> (files in order, without repeats; failures)."""
    files, failures, seen = [], [], set()

    def add(p: str) -> None:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            files.append(p)

    for arg in args:
        if os.path.isdir(arg):
            found = [str(p) for p in images.list_images(arg)]
            if not found:
                failures.append(Failure(arg, "a folder with no image files "
                                             f"({', '.join(images.IMAGE_EXTENSIONS)})"))
            for p in found:
                add(p)
        elif os.path.exists(arg):
            add(arg)
        elif glob.has_magic(arg):
            matches = sorted(glob.glob(arg))
            if not matches:
                failures.append(Failure(arg, "no file matches this pattern"))
            for p in matches:
                if os.path.isdir(p):
                    for q in images.list_images(p):
                        add(str(q))
                else:
                    add(p)
        else:
            failures.append(Failure(arg, "no such file or folder"))
    return files, failures


def check_out_dir(out: str, inputs: list[str], input_args: list[str]) -> None:
    """Refuses an ``--out`` that is an input folder or the folder of an input file (ValueError)."""
    out_real = os.path.realpath(out)
    folders = {os.path.realpath(a) for a in input_args if os.path.isdir(a)}
    folders |= {os.path.realpath(os.path.dirname(os.path.abspath(p))) for p in inputs}
    if out_real in folders:
        raise ValueError(f"--out {out} is a folder that holds input photos; outputs must not be "
                         "written beside (or over) the inputs: choose another --out folder")


def output_names(inputs: list[str], save_mask: bool) -> list[str]:
    """``<stem>`` per input, made unique (``<stem>_2`` ...), also against the ``_mask`` names."""
    used, names = set(), []
    for p in inputs:
        stem = images.image_stem(p)
        name, n = stem, 1
        while name in used or (save_mask and f"{name}_mask" in used):
            n += 1
            name = f"{stem}_{n}"
        used.add(name)
        if save_mask:
            used.add(f"{name}_mask")
        names.append(name)
    return names


def _write_atomic(path: str, rgb: np.ndarray, alpha: np.ndarray | None = None) -> None:
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        images.save_png(tmp, rgb, alpha)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---- the command -----------------------------------------------------------------------------

def parse_args(argv: list[str]):
    parser = argparse_flags.ArgumentParser(
        prog="recnet-enhance", description=__doc__.split("\n\n")[0],
        epilog="Example: recnet-enhance photos/ extra.jpg --checkpoint runs/demo --out out/enhanced")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="photo files, folders or globs")
    parser.add_argument("--checkpoint", required=True,
                        help=f"the weights: {weights.ACCEPTED}")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--save_mask", action="store_true",
                        help="also write the exposure map as <name>_mask.png")
    parser.add_argument("--max_megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                        help="photos above this are downsized to it first (the output is then "
                             f"smaller, with a warning); above {REFUSE_FACTOR}x it they are refused")
    parser.add_argument("--norm_variant", default="", choices=["", "paper", "official"],
                        help="override the checkpoint's normalisation variant ('' keeps it)")
    args = parser.parse_args(argv[1:])
    if not args.max_megapixels > 0:
        parser.error(f"--max_megapixels must be positive, got {args.max_megapixels}")
    return args


def enhance_files(model, files: list[str], out: str, *, save_mask: bool = False,
                  max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> tuple[list[dict], list[Failure]]:
    """Corrects ``files`` into ``out``; returns (records of the written photos, failures)."""
    os.makedirs(out, exist_ok=True)
    max_pixels = int(max_megapixels * 1e6)
    hint = (f"downsize it first, or raise --max_megapixels (now {max_megapixels:g}; photos above it "
            f"are downsized, above {REFUSE_FACTOR}x it refused)")
    done, failures, icc = [], [], 0
    bar = progress.Progress(len(files), "enhance", every_s=0.0, enabled=len(files) > 1)
    for path, name in zip(files, output_names(files, save_mask)):
        try:
            photo = images.load_photo(path, max_pixels=max_pixels,
                                      refuse_pixels=REFUSE_FACTOR * max_pixels, too_large_hint=hint)
            if photo.downsized_from:
                (w0, h0), (h, w) = photo.downsized_from, photo.rgb.shape[:2]
                logging.warning("%s: %dx%d (%.1f MP) is above --max_megapixels %g: downsized to "
                                "%dx%d for the correction; the output has that size", path, w0, h0,
                                w0 * h0 / 1e6, max_megapixels, w, h)
            if photo.has_icc and not icc:
                logging.info("note: colour profiles are ignored: %s (and any other photo with an "
                             "embedded ICC profile) is corrected from its stored values and the "
                             "output PNG carries no profile", path)
            icc += photo.has_icc
            rgb, mask = enhance_array(model, photo.rgb)
            target = os.path.join(out, f"{name}.png")
            _write_atomic(target, rgb, photo.alpha)
            record = {"input": path, "output": target, "size": [rgb.shape[1], rgb.shape[0]],
                      "bits": photo.bits, "alpha": photo.alpha is not None}
            if save_mask:
                record["mask"] = os.path.join(out, f"{name}_mask.png")
                _write_atomic(record["mask"], mask_to_uint8(mask))
            if photo.downsized_from:
                record["downsized_from"] = list(photo.downsized_from)
            done.append(record)
        except images.BadInputError as e:
            failures.append(Failure(path, e.reason))
            logging.error("%s", e)
        except Exception as e:  # pylint: disable=broad-except  (report it, go on with the others)
            first = (str(e).strip().splitlines() or [""])[0]
            failures.append(Failure(path, f"{type(e).__name__}: {first}"))
            logging.error("%s: failed: %s: %s", path, type(e).__name__, first)
        bar.update(note=os.path.basename(path))
    if icc:
        logging.info("%d photo(s) embed a colour profile (ignored)", icc)
    return done, failures


def main(args) -> int:
    runtime.quiet_logs()
    files, failures = expand_inputs(args.inputs)
    for f in failures:
        logging.error("%s: %s", f.path, f.reason)
    try:
        check_out_dir(args.out, files, args.inputs)
        if not files:
            raise ValueError("no input photos (see the errors above)")
        model, source = weights.load(args.checkpoint, norm_variant=args.norm_variant or None)
    except (ValueError, FileNotFoundError, ImportError) as e:
        logging.error("%s", e)
        print(json.dumps({"processed": 0, "failed": len(failures), "error": str(e).splitlines()[0]}))
        return EXIT_USAGE
    logging.info("weights: %s; %d photo(s) -> %s", source, len(files), args.out)
    done, bad = enhance_files(model, files, args.out, save_mask=args.save_mask,
                              max_megapixels=args.max_megapixels)
    failures += bad
    summary = {"processed": len(done), "failed": len(failures), "out": args.out,
               "failures": [dataclasses.asdict(f) for f in failures]}
    logging.info("processed %d, failed %d%s", len(done), len(failures),
                 "".join(f"\n  {f.path}: {f.reason}" for f in failures))
    print(json.dumps(summary))
    return EXIT_FAILED if failures else EXIT_OK


def _main(args) -> None:
    sys.exit(main(args))


def run() -> None:
    """The ``recnet-enhance`` console script."""
    runtime.use_huge_pages()
    app.run(_main, flags_parser=parse_args)


if __name__ == "__main__":
    run()
