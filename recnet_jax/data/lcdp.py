"""TFDS builder for LCDP (Wang, Xu, Lau, ECCV 2022): each image has over- and under-exposed parts.

``train`` = every subset's ``input``/``gt`` (``train-input``/``train-gt`` also accepted);
``test`` = ``test-input``/``test-gt``. Subsets are the sub-folders of ``manual_dir`` that have
those folders (``adobe5k``, ``raise``, or LCDPNet's ``OaU03``/``raise01``), or ``manual_dir``
itself. Names are ``<subset>/<stem>``; ``exposure`` is ``"mixed"``.
"""

from __future__ import annotations

import pathlib

from recnet_jax.data import base, images
from recnet_jax.data.images import LayoutError

LAYOUT = """\
  <manual_dir>/
    adobe5k/input/*.png   adobe5k/gt/*.png            (train; also train-input/ train-gt/)
    adobe5k/test-input/*.png   adobe5k/test-gt/*.png  (test)
    raise/input/*.png   raise/gt/*.png                (train)
  Subset names are free; <manual_dir> may also hold input/ gt/ test-input/ test-gt/ directly."""

# split -> (input folder names, target folder names), first existing one wins.
_FOLDERS = {"train": (("input", "train-input"), ("gt", "train-gt")),
            "test": (("test-input",), ("test-gt",))}


def _first_dir(parent: pathlib.Path, names: tuple[str, ...]) -> pathlib.Path | None:
    return next((parent / n for n in names if (parent / n).is_dir()), None)


class Lcdp(base.PairedImageBuilder):
    """LCDP: images with both over- and under-exposed regions, rendered from raw."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT
    EXPOSURE_DOC = 'always "mixed"'

    def find_pairs(self, root: pathlib.Path) -> dict[str, list[base.PairSpec]]:
        def has_inputs(d: pathlib.Path) -> bool:
            return any(_first_dir(d, ins) for ins, _ in _FOLDERS.values())

        if has_inputs(root):
            subsets = [(root, "")]
        else:
            subsets = [(d, f"{d.name}/") for d in sorted(root.iterdir()) if d.is_dir() and has_inputs(d)]
        if not subsets:
            raise LayoutError(f"{root}: no input/ or test-input/ folders found. Expected layout:\n{LAYOUT}")
        out: dict[str, list[base.PairSpec]] = {}
        for subset, prefix in subsets:
            for split, (in_names, gt_names) in _FOLDERS.items():
                in_dir = _first_dir(subset, in_names)
                if in_dir is None:
                    continue
                gt_dir = _first_dir(subset, gt_names)
                if gt_dir is None:
                    raise LayoutError(f"{in_dir}: has no ground-truth folder beside it "
                                      f"({' or '.join(gt_names)}). Expected layout:\n{LAYOUT}")
                out.setdefault(split, []).extend(base.match_by_stem(
                    images.list_images(in_dir), gt_dir, name_prefix=prefix, exposure="mixed"))
        return out
