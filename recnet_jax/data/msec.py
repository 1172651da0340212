"""TFDS builder for MSEC (Afifi et al., CVPR 2021), from its published folder layout.

Splits ``train``, ``validation`` and ``test`` (each built when its folder exists). The input's
name suffix gives the exposure level; the ground truth is matched by base name. Configs
``expert_a`` ... ``expert_e`` choose the test ground truth (default ``expert_c``, the usual choice;
train/validation always use ``GT_IMAGES``). Read back with
``tfds.data_source("msec", data_dir=...)`` (= ``"msec/expert_c"``).

Extra feature: ``ev`` (float32 scalar): -1.5, -1, 0, +1 or +1.5; ``exposure`` holds the suffix.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from recnet_jax.data import base, images
from recnet_jax.data.images import BadInputError, LayoutError

LAYOUT = """\
  <manual_dir>/
    train/INPUT_IMAGES/<base>_<EV>.JPG      EV in {N1.5, N1, 0, P1, P1.5}
    train/GT_IMAGES/<base>.jpg
    validation/INPUT_IMAGES/, validation/GT_IMAGES/   (same naming)
    test/INPUT_IMAGES/, test/expert_{a,b,c,d,e}_testing_set/<base>.jpg
  Any of train/validation/test may be absent; at least one must be there."""

# MSEC input suffix -> relative EV (the release's grouping keys are these suffixes).
EV_BY_SUFFIX = {"N1.5": -1.5, "N1": -1.0, "0": 0.0, "P1": 1.0, "P1.5": 1.5}
_INPUT_RE = re.compile(r"^(?P<base>.+)_(?P<ev>N1\.5|N1|0|P1|P1\.5)$", re.IGNORECASE)


def parse_input_name(stem: str) -> tuple[str, str] | None:
    """``"a0716-MB_20030906_030_P1.5"`` -> ``("a0716-MB_20030906_030", "P1.5")``; None if no suffix."""
    m = _INPUT_RE.match(stem)
    if m is None:
        return None
    return m.group("base"), m.group("ev").upper()


@dataclasses.dataclass
class MsecConfig(tfds.core.BuilderConfig):
    expert: str = "c"


class Msec(base.PairedImageBuilder):
    """MSEC mixed-exposure pairs: 5 exposures (-1.5..+1.5 EV) per scene, one ground truth."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = LAYOUT
    BUILDER_CONFIGS = [MsecConfig(name=f"expert_{e}", expert=e,
                                  description=f"test ground truth: expert_{e}_testing_set")
                       for e in "abcde"]
    DEFAULT_BUILDER_CONFIG_NAME = "expert_c"
    EXPOSURE_DOC = "MSEC input suffix: N1.5, N1, 0, P1 or P1.5"

    def extra_features(self):
        return {"ev": tfds.features.Scalar(dtype=np.float32, doc="relative exposure in EV")}

    def find_pairs(self, root: pathlib.Path) -> dict[str, list[base.PairSpec]]:
        gt_dirs = {"train": "GT_IMAGES", "validation": "GT_IMAGES",
                   "test": f"expert_{self.builder_config.expert}_testing_set"}
        out = {}
        for split, gt_name in gt_dirs.items():
            split_dir = root / split
            if not split_dir.is_dir():
                continue
            in_dir = base.require_dir(split_dir / "INPUT_IMAGES", f"{split} input", LAYOUT)
            gt_dir = base.require_dir(split_dir / gt_name, f"{split} ground-truth", LAYOUT)
            targets = images.index_by_stem(images.list_images(gt_dir))
            specs = []
            for p in images.list_images(in_dir):
                parsed = parse_input_name(images.image_stem(p))
                if parsed is None:
                    self.on_bad(BadInputError(p, "input name has no MSEC exposure suffix "
                                                 f"(_N1.5, _N1, _0, _P1, _P1.5)"), split)
                    continue
                base_name, suffix = parsed
                specs.append(base.PairSpec(
                    input=p, target=targets.get(base_name), name=images.image_stem(p),
                    exposure=suffix, extra={"ev": EV_BY_SUFFIX[suffix]},
                    expected_target=f"{gt_dir / base_name}.*"))
            out[split] = specs
        if not out:
            raise LayoutError(f"{root}: none of train/, validation/, test/ found. Expected layout:\n{LAYOUT}")
        return out
