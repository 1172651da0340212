"""The common TFDS builder for paired exposure datasets (MSEC, SICE, LCDP, paired folders, synthetic).

A subclass only says where the pairs are (:meth:`PairedImageBuilder.find_pairs`); this class does
the rest: checks files, converts odd images (``images.load_rgb``), skips and lists bad files when
``skip_bad`` is set, and yields examples for an ArrayRecord build.

Every example has these features (TFDS decodes them to numpy):

* ``input``, ``target``: [H, W, 3] uint8 RGB, the same H and W.
* ``name``: unique name within the split (bytes when read).
* ``exposure``: the exposure label (``"N1.5"``, ``"N1"``, ``"0"``, ``"P1"``, ``"P1.5"`` for MSEC,
  ``"low"``/``"over"`` for SICE, ``"mixed"`` for LCDP and synthetic, ``""`` where unknown).
* builder extras (MSEC ``ev``; synthetic ``ev_map``).

Images stored as bytes: JPEG/PNG files that are already 8-bit RGB with no EXIF rotation are stored
as their original bytes (no re-encoding; decoded pixel-exact by the same Pillow decoder); every
other image is converted and stored as PNG.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from recnet_jax.data import images
from recnet_jax.data.images import BadInputError, LayoutError

# The release's training crop; builders refuse smaller training images unless told otherwise.
DEFAULT_MIN_SIZE = 384
VERSION = tfds.core.Version("1.0.0")


@dataclasses.dataclass(frozen=True)
class PairSpec:
    """One (input, target) pair found on disk, before any file is opened.

    Attributes:
      input: the input image file.
      target: the target file, or None when no target was found (a bad pair).
      name: unique example name within its split.
      exposure: exposure label ("" when unknown).
      extra: further features for this example (e.g. MSEC ``ev``).
      expected_target: where the target was looked for (for the "no target" message).
    """

    input: pathlib.Path
    target: pathlib.Path | None
    name: str
    exposure: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    expected_target: str = ""


@dataclasses.dataclass
class Skip:
    """A file skipped with ``skip_bad``: the file, its split and why."""

    file: str
    split: str
    reason: str


def passthrough_bytes(path: pathlib.Path) -> bytes | None:
    """The file's bytes if TFDS can store them unchanged (8-bit RGB JPEG/PNG, no EXIF rotation)."""
    try:
        with Image.open(path) as raw:
            fmt, mode = raw.format, raw.mode
            orientation = raw.getexif().get(0x0112, 1)
            args = raw.tile[0].args if len(raw.tile) == 1 else None
            rawmode = args[0] if isinstance(args, tuple) else args
    except Exception:  # noqa: BLE001 - load_rgb already succeeded; fall back to re-encoding
        return None
    # rawmode "RGB" = 8 bits per channel (16-bit PNGs say "RGB;16B"; Adobe CMYK "CMYK;I").
    if fmt in ("JPEG", "PNG") and mode == "RGB" and rawmode == "RGB" and orientation == 1:
        return path.read_bytes()
    return None


def encode_png(im: Image.Image | np.ndarray) -> bytes:
    """PNG bytes of a PIL image or [H, W, 3] uint8 array (fast compression: build time matters more)."""
    if isinstance(im, np.ndarray):
        im = Image.fromarray(im)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class PairedImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base builder. Subclasses implement :meth:`find_pairs` (and may add features).

    Args (besides TFDS's own ``data_dir``, ``config``, ``file_format``, ...):
      skip_bad: skip bad files (listed in ``self.skipped``) instead of raising BadInputError.
      min_size: minimum image side in the ``train`` split (the training crop); 0 disables it;
        None: the builder's ``DEFAULT_MIN_SIZE`` (the release's 384 crop unless a builder says
        otherwise).
    """

    VERSION = VERSION
    DEFAULT_MIN_SIZE = DEFAULT_MIN_SIZE
    RELEASE_NOTES = {"1.0.0": "First release."}
    TRAIN_SPLITS = ("train",)
    EXPOSURE_DOC = "exposure label"

    def __init__(self, *, skip_bad: bool = False, min_size: int | None = None, **kwargs: Any):
        self.skip_bad = skip_bad
        self.min_size = type(self).DEFAULT_MIN_SIZE if min_size is None else min_size
        self.skipped: list[Skip] = []
        self.source_dir: pathlib.Path | None = None
        super().__init__(**kwargs)

    # ---- to override -------------------------------------------------------------------------
    def find_pairs(self, root: pathlib.Path) -> dict[str, list[PairSpec]]:
        """Split name -> pairs found under ``root`` (the manual folder). Raise LayoutError if the
        folder does not look like the dataset."""
        raise NotImplementedError

    def extra_features(self) -> dict[str, tfds.features.FeatureConnector]:
        return {}

    def image_feature(self, doc: str) -> tfds.features.FeatureConnector:
        """The feature for ``input``/``target``: an encoded image (original JPEG/PNG bytes or PNG)."""
        return tfds.features.Image(shape=(None, None, 3), doc=doc)

    def description(self) -> str:
        return self.__doc__ or ""

    # ---- TFDS hooks --------------------------------------------------------------------------
    def _info(self) -> tfds.core.DatasetInfo:
        feats = {
            "input": self.image_feature("input image, [H, W, 3] uint8 RGB"),
            "target": self.image_feature("ground truth, [H, W, 3] uint8 RGB"),
            "name": tfds.features.Text(doc="example name, unique in its split"),
            "exposure": tfds.features.Text(doc=self.EXPOSURE_DOC),
            **self.extra_features(),
        }
        return tfds.core.DatasetInfo(builder=self, description=self.description(),
                                     features=tfds.features.FeaturesDict(feats),
                                     supervised_keys=("input", "target"))

    def manual_root(self, dl_manager) -> pathlib.Path:
        root = pathlib.Path(str(dl_manager.manual_dir))
        if not root.is_dir():
            raise LayoutError(f"{root}: manual folder not found; pass --manual_dir pointing at the "
                              f"unpacked dataset. Expected layout:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return root

    def _split_generators(self, dl_manager):
        root = self.manual_root(dl_manager)
        self.source_dir = root
        found = self.find_pairs(root)
        if not found or not any(found.values()):
            raise LayoutError(f"{root}: no image pairs found. Expected layout:\n"
                              f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        # Cheap checks over every split before anything is decoded, so a missing target or an empty
        # file fails the build at once instead of after hours of encoding.
        checked = {}
        for split, pairs in found.items():
            good = []
            for spec in pairs:
                try:
                    self.precheck(spec)
                    good.append(spec)
                except BadInputError as e:
                    self.on_bad(e, split)
            checked[split] = good
        return {split: self._generate_split(split, pairs) for split, pairs in checked.items()}

    def _generate_examples(self, **kwargs):  # pragma: no cover - splits use _generate_split
        raise NotImplementedError

    # ---- shared machinery --------------------------------------------------------------------
    def on_bad(self, err: BadInputError, split: str) -> None:
        """Raise ``err`` or, with skip_bad, record the skip."""
        if not self.skip_bad:
            raise err
        self.skipped.append(Skip(file=err.path, split=split, reason=err.reason))

    def precheck(self, spec: PairSpec) -> None:
        """Checks that need no decoding: a target exists, neither file is empty."""
        if spec.target is None:
            raise BadInputError(spec.input, f"input has no target (looked for {spec.expected_target})",
                                hint="add the target, remove the input, or rerun with --skip_bad")
        for p in (spec.input, spec.target):
            if os.path.getsize(p) == 0:
                raise BadInputError(p, "file is empty (0 bytes)")

    def _generate_split(self, split: str, specs: list) -> Iterator[tuple[str, dict]]:
        n_ok = 0
        self._target_cache: tuple[pathlib.Path, Any] | None = None
        for spec in specs:
            try:
                example = self.load_example(spec, split)
            except BadInputError as e:
                self.on_bad(e, split)
                continue
            n_ok += 1
            yield spec.name, example
        if n_ok == 0:
            raise LayoutError(f"split {split!r} has no usable pairs left ({len(specs)} found, all bad; "
                              "see the skipped files)")

    def _load_target(self, path: pathlib.Path):
        """Load a target, reusing the previous one (MSEC has 5 inputs per target, listed together)."""
        if self._target_cache is not None and self._target_cache[0] == path:
            result = self._target_cache[1]
        else:
            try:
                result = images.load_rgb(path)
            except BadInputError as e:
                result = e
            self._target_cache = (path, result)
        if isinstance(result, BadInputError):
            raise result
        return result

    def load_example(self, spec: PairSpec, split: str) -> dict[str, Any]:
        """Decode, convert and check one pair; return the TFDS example dict."""
        inp = images.load_rgb(spec.input)
        tgt = self._load_target(spec.target)
        images.check_pair(spec.input, inp, spec.target, tgt,
                          min_size=self.min_size if split in self.TRAIN_SPLITS else 0)
        return {
            "input": passthrough_bytes(spec.input) or encode_png(inp),
            "target": passthrough_bytes(spec.target) or encode_png(tgt),
            "name": spec.name,
            "exposure": spec.exposure,
            **spec.extra,
        }


def require_dir(path: pathlib.Path, what: str, layout: str) -> pathlib.Path:
    """``path`` if it is a folder, else a LayoutError naming it and showing the expected layout."""
    if not path.is_dir():
        raise LayoutError(f"{path}: missing {what} folder. Expected layout:\n{layout}")
    return path


def match_by_stem(inputs: list[pathlib.Path], target_dir: pathlib.Path, *, name_prefix: str = "",
                  exposure: str = "") -> list[PairSpec]:
    """Pairs ``inputs`` with the files of ``target_dir`` that have the same stem."""
    targets = images.index_by_stem(images.list_images(target_dir))
    specs = []
    for p in inputs:
        stem = images.image_stem(p)
        specs.append(PairSpec(input=p, target=targets.get(stem), name=f"{name_prefix}{stem}",
                              exposure=exposure,
                              expected_target=f"{target_dir / stem}.* (same file stem)"))
    return specs
