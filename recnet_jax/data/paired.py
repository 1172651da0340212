"""TFDS builder for any folder of (input, target) pairs matched by file stem.

``<manual_dir>/input/`` + ``<manual_dir>/target/`` (or ``gt/``) gives one split, ``train``.
``<manual_dir>/<split>/input/`` + ``.../target/`` gives one split per sub-folder (any names made of
letters, digits and ``_``, e.g. ``train``, ``validation``, ``test``). ``exposure`` is ``""``.
"""

from __future__ import annotations

import pathlib
import re

from recnet_jax.data import base, images
from recnet_jax.data.images import LayoutError

LAYOUT = """\
  <manual_dir>/input/<stem>.<ext>   <manual_dir>/target/<stem>.<ext>   (one split: train)
  or <manual_dir>/<split>/input/ and <manual_dir>/<split>/target/ for each split
  (target/ may be called gt/; pairs are matched by file stem, extensions may differ)"""

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")


def _target_dir(d: pathlib.Path) -> pathlib.Path | None:
    return next((d / n for n in ("target", "gt") if (d / n).is_dir()), None)


class Paired(base.PairedImageBuilder):
    """Generic paired folders: inputs and targets matched by file stem."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT
    EXPOSURE_DOC = 'always "" (unknown)'

    def find_pairs(self, root: pathlib.Path) -> dict[str, list[base.PairSpec]]:
        if (root / "input").is_dir():
            split_dirs = {"train": root}
        else:
            split_dirs = {d.name: d for d in sorted(root.iterdir()) if (d / "input").is_dir()}
        if not split_dirs:
            raise LayoutError(f"{root}: no input/ folder found. Expected layout:\n{LAYOUT}")
        out = {}
        for split, d in split_dirs.items():
            if not _SPLIT_RE.match(split):
                raise LayoutError(f"{d}: split folder names may only use letters, digits and _")
            tgt = _target_dir(d)
            if tgt is None:
                raise LayoutError(f"{d / 'input'}: no target/ (or gt/) folder beside it. "
                                  f"Expected layout:\n{LAYOUT}")
            out[split] = base.match_by_stem(images.list_images(d / "input"), tgt)
        return out
