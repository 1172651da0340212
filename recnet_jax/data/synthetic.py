"""TFDS builder for synthetic mixed-exposure pairs (the embedded default training data).

Source photos (well exposed, RGB):

* default: real photographs shipped inside scikit-image's wheel (``skimage/data``), no network,
  at half resolution (``scale`` 0.5, see below): ``train`` = astronaut, coffee, motorcycle_left,
  rocket (256 x 256 to 370 x 250 px); ``test`` = chelsea (451 x 300 -> 226 x 150 -> 224 x 148, a
  held-out scene; eval needs no crop).
* ``source_dir`` (CLI ``--manual_dir``): ``source_dir/train/`` and ``source_dir/test/`` (either
  optional) if they exist; otherwise the photos directly in ``source_dir``, sorted by name, with
  every 5th one (indices 4, 9, ...) held out as ``test`` (no test split with fewer than 5 photos).

Each photo is first resized by ``scale`` (Pillow Lanczos; 1 = as it is; the bundled photos default
to 0.5, so that a 128^2 training crop holds about a quarter of a scene and with it regions of both
exposures and the unchanged ones, as a whole test image does; at full size most crops hold one
exposure only: the same 700-step demo recipe gained 2.7 dB on the held-out scene at full size
and 5.7 dB at half size), then centre-cropped to multiples of 4 (at most 3 rows/columns dropped; the release
would resize it to multiples of 4 anyway), then gives ``variants`` pairs per split (``synthesis.synthesize_pair`` with seed
``(seed, crc32(photo stem), variant, split index)``); names are ``<stem>_v<variant>``.
``input`` and ``target`` are stored as raw uint8 tensors (not PNG) for fast reading; they decode to
the same [H, W, 3] uint8 arrays as the other datasets' images. Extra feature ``ev_map``: [H, W]
float16, the exposure change in EV that made the input. ``exposure`` is ``"mixed"``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import zlib

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from recnet_jax.data import base, images, synthesis
from recnet_jax.data.images import BadInputError, LayoutError

BUNDLED_TRAIN = ("astronaut.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")
BUNDLED_TEST = ("chelsea.png",)
BUNDLED_SCALE = 0.5
DEFAULT_VARIANTS = {"train": 16, "test": 4}

LAYOUT = """\
  <manual_dir>/train/*.png|jpg  and optionally <manual_dir>/test/*   (explicit splits), or
  <manual_dir>/*.png|jpg   (every 5th photo by name goes to test)
  Without --manual_dir the photos bundled with scikit-image are used."""


def bundled_photo_dir() -> pathlib.Path:
    """scikit-image's bundled sample-data folder (no import of skimage, no download)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise LayoutError("scikit-image is not installed, so there are no bundled photos; "
                          "pass --manual_dir with a folder of well-exposed photos")
    d = pathlib.Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [n for n in BUNDLED_TRAIN + BUNDLED_TEST if not (d / n).is_file()]
    if missing:
        raise LayoutError(f"{d}: bundled photos {missing} not found (different scikit-image "
                          "version?); pass --manual_dir with a folder of well-exposed photos")
    return d


def crop_to_multiple(photo: np.ndarray, multiple: int = 4) -> np.ndarray:
    """Centre-crop [H, W, 3] to [H // m * m, W // m * m, 3] (drops at most m - 1 rows/columns), so
    that the release's resize-to-multiple-of-4 is an identity on synthetic data."""
    h, w = photo.shape[:2]
    h4, w4 = h // multiple * multiple, w // multiple * multiple
    top, left = (h - h4) // 2, (w - w4) // 2
    return photo[top:top + h4, left:left + w4]


@dataclasses.dataclass(frozen=True)
class PhotoSpec:
    """One synthetic example to make: a photo, a variant index and its seed."""

    photo: pathlib.Path
    name: str
    seed: tuple[int, ...]


class Synthetic(base.PairedImageBuilder):
    """Synthetic mixed exposure from well-exposed photos (smooth random EV maps in linear light)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT
    EXPOSURE_DOC = 'always "mixed"'
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "Source photos resized by `scale` (bundled photos: 0.5)."}
    DEFAULT_MIN_SIZE = 128   # the demo's crop; the half-size bundled photos are 200-256 px high

    def __init__(self, *, source_dir: str | pathlib.Path | None = None, seed: int = 0,
                 variants: dict[str, int] | int | None = None, scale: float | None = None,
                 synthesis_config: synthesis.SynthesisConfig = synthesis.SynthesisConfig(), **kwargs):
        """Args: source_dir (None: bundled photos), seed, variants (per split, or one int for all),
        scale (photo resize factor; None: ``BUNDLED_SCALE`` for the bundled photos, 1 for a
        folder), synthesis_config; plus the base builder's skip_bad/min_size and TFDS's kwargs."""
        self.source = pathlib.Path(source_dir) if source_dir is not None else None
        if scale is None:
            scale = BUNDLED_SCALE if self.source is None else 1.0
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"--scale {scale}: the photo resize factor must be in (0, 1]")
        self.scale = float(scale)
        self.seed = seed
        if isinstance(variants, int):
            variants = {"train": variants, "test": variants}
        self.variants = {**DEFAULT_VARIANTS, **(variants or {})}
        self.synthesis_config = synthesis_config
        super().__init__(**kwargs)

    def extra_features(self):
        return {"ev_map": tfds.features.Tensor(shape=(None, None), dtype=np.float16, encoding="bytes",
                                               doc="EV change applied per pixel, [H, W]")}

    def image_feature(self, doc: str) -> tfds.features.FeatureConnector:
        # Raw uint8 bytes, not PNG: reading is ~20x faster (no decode), which keeps the default
        # training input pipeline cheap; the dataset is small, so the extra disk space is minor.
        return tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="bytes", doc=doc)

    def description(self) -> str:
        return (f"{self.__doc__} Source: "
                f"{'scikit-image bundled photos' if self.source is None else 'a photo folder'}; "
                f"seed {self.seed}; variants {self.variants}; scale {self.scale}; "
                f"{self.synthesis_config}.")

    def manual_root(self, dl_manager) -> pathlib.Path:
        root = self.source if self.source is not None else bundled_photo_dir()
        if not root.is_dir():
            raise LayoutError(f"{root}: photo folder not found. Expected layout:\n{LAYOUT}")
        return root

    def _photos_by_split(self, root: pathlib.Path) -> dict[str, list[pathlib.Path]]:
        if self.source is None:
            return {"train": [root / n for n in BUNDLED_TRAIN], "test": [root / n for n in BUNDLED_TEST]}
        if (root / "train").is_dir() or (root / "test").is_dir():
            return {s: images.list_images(root / s) for s in ("train", "test") if (root / s).is_dir()}
        photos = images.list_images(root)
        test = [p for i, p in enumerate(photos) if i % 5 == 4]
        out = {"train": [p for p in photos if p not in test]}
        if test:
            out["test"] = test
        return out

    def find_pairs(self, root: pathlib.Path) -> dict[str, list[PhotoSpec]]:
        out = {}
        for split_idx, (split, photos) in enumerate(sorted(self._photos_by_split(root).items())):
            images.index_by_stem(photos)  # stems must be unique: they name the examples
            out[split] = [
                PhotoSpec(photo=p, name=f"{images.image_stem(p)}_v{v:02d}",
                          seed=(self.seed, zlib.crc32(images.image_stem(p).encode()), v, split_idx))
                for p in photos for v in range(self.variants.get(split, 1))]
        return out

    def precheck(self, spec: PhotoSpec) -> None:
        if spec.photo.stat().st_size == 0:
            raise BadInputError(spec.photo, "file is empty (0 bytes)")

    def load_example(self, spec: PhotoSpec, split: str) -> dict:
        photo = self._load_target(spec.photo)
        if self.scale != 1.0:
            w, h = photo.size
            photo = photo.resize((max(1, round(w * self.scale)), max(1, round(h * self.scale))),
                                 Image.Resampling.LANCZOS)
        photo = crop_to_multiple(np.asarray(photo))
        h, w = photo.shape[:2]
        min_size = self.min_size if split in self.TRAIN_SPLITS else 0
        if min(h, w) < max(min_size, 4):
            raise BadInputError(spec.photo, f"photo is {w}x{h} (WxH, after resizing by {self.scale} and "
                                            "cropping to multiples of 4), "
                                            f"smaller than the minimum side {max(min_size, 4)} (the "
                                            "training crop); pass a smaller --min_size if you train "
                                            "with a smaller crop")
        pair = synthesis.synthesize_pair(photo, spec.seed, self.synthesis_config)
        return {"input": pair.input, "target": pair.target, "name": spec.name, "exposure": "mixed",
                "ev_map": pair.ev_map}
