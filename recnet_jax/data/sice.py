"""TFDS builder for SICE in ENC's "SICEV2" mixed-exposure protocol.

``low`` and ``over`` images are the inputs, ``mid`` (same file stem) the ground truth. Splits
``train`` and ``test`` (each built when its folder exists). Example names are ``<id>_low`` /
``<id>_over``; ``exposure`` is ``"low"`` or ``"over"``.
"""

from __future__ import annotations

import dataclasses
import pathlib

from recnet_jax.data import base, images
from recnet_jax.data.images import LayoutError

LAYOUT = """\
  <manual_dir>/              (or <manual_dir>/SICEV2/)
    train/low/<id>.JPG   train/over/<id>.JPG   train/mid/<id>.JPG   (mid = ground truth)
    test/low/  test/over/  test/mid/
  Either split may be absent; at least one must be there."""


class Sice(base.PairedImageBuilder):
    """SICE (SICEV2 protocol): under- (low) and over-exposed inputs, mid-exposure ground truth."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT
    EXPOSURE_DOC = "low or over"

    def find_pairs(self, root: pathlib.Path) -> dict[str, list[base.PairSpec]]:
        if (root / "SICEV2").is_dir():
            root = root / "SICEV2"
        out = {}
        for split in ("train", "test"):
            split_dir = root / split
            if not split_dir.is_dir():
                continue
            mid = base.require_dir(split_dir / "mid", f"{split} ground-truth (mid)", LAYOUT)
            specs = []
            for level in ("low", "over"):
                level_dir = base.require_dir(split_dir / level, f"{split} {level}", LAYOUT)
                for spec in base.match_by_stem(images.list_images(level_dir), mid, exposure=level):
                    specs.append(dataclasses.replace(spec, name=f"{spec.name}_{level}"))
            out[split] = specs
        if not out:
            raise LayoutError(f"{root}: neither train/ nor test/ found. Expected layout:\n{LAYOUT}")
        return out
