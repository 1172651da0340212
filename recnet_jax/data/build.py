"""Build any of the datasets into ``data_dir`` as ArrayRecord (TFDS, no TensorFlow needed).

Command line::

    python -m recnet_jax.data.build --dataset {msec,sice,lcdp,paired,synthetic} \\
        --manual_dir DIR --data_dir DIR [--skip_bad] [--min_size N] [--config expert_c] \\
        [--seed 0] [--variants N] [--scale F]

The last stdout line is a one-line JSON summary::

    {"dataset": "msec", "name": "msec/expert_c", "version": "1.0.0",
     "splits": {"train": 17680, ...}, "skipped": ["train/INPUT_IMAGES/x_0.JPG", ...],
     "skipped_pairs": 1, "skip_reasons": {"train/INPUT_IMAGES/x_0.JPG": "file is empty (0 bytes)"}}

``skipped`` lists each bad file once (relative to the manual folder); ``skipped_pairs`` counts the
pairs dropped (an MSEC target serves 5 inputs). Bad files fail the build with exit status 2 and a
message naming the file, unless ``--skip_bad``. ``--manual_dir`` is optional for ``synthetic``
(bundled photos).

The build runs in a hidden temporary folder inside ``data_dir`` and is moved into place only when
complete (replacing an older build of the same name and version), so a failed or interrupted
build leaves nothing that looks like a dataset. The result is read with
``tfds.data_source(name, split=..., data_dir=data_dir)``; ``build_info.json`` beside the ArrayRecord
files repeats the summary and the build options.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any

import tensorflow_datasets as tfds

from recnet_jax.data import base
from recnet_jax.data.images import BadInputError, LayoutError
from recnet_jax.data.lcdp import Lcdp
from recnet_jax.data.msec import Msec
from recnet_jax.data.paired import Paired
from recnet_jax.data.sice import Sice
from recnet_jax.data.synthetic import Synthetic

BUILDERS: dict[str, type[base.PairedImageBuilder]] = {
    "msec": Msec, "sice": Sice, "lcdp": Lcdp, "paired": Paired, "synthetic": Synthetic}


@dataclasses.dataclass
class BuildResult:
    """What a build produced.

    Attributes:
      dataset: the CLI name (``msec``, ...).
      name: the TFDS name to read it with (``msec/expert_c``, ``sice``, ...).
      version: dataset version string.
      path: the finished dataset folder (``data_dir/name/version``).
      splits: examples per split.
      skipped: the skips (one per skipped pair; a file may appear more than once).
    """

    dataset: str
    name: str
    version: str
    path: pathlib.Path
    splits: dict[str, int]
    skipped: list[base.Skip]
    source_dir: pathlib.Path | None = None

    def _rel(self, file: str) -> str:
        if self.source_dir is not None:
            try:
                return pathlib.Path(file).resolve().relative_to(self.source_dir.resolve()).as_posix()
            except ValueError:
                pass
        return file

    def summary(self) -> dict[str, Any]:
        """The CLI's JSON summary (see module docstring)."""
        reasons: dict[str, str] = {}
        for s in self.skipped:
            reasons.setdefault(self._rel(s.file), s.reason)
        return {"dataset": self.dataset, "name": self.name, "version": self.version,
                "splits": dict(self.splits), "skipped": sorted(reasons),
                "skipped_pairs": len(self.skipped), "skip_reasons": dict(sorted(reasons.items()))}


def build_dataset(dataset: str, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None = None,
                  *, skip_bad: bool = False, min_size: int | None = None,
                  config: str | None = None, **builder_kwargs: Any) -> BuildResult:
    """Build ``dataset`` from ``manual_dir`` into ``data_dir`` atomically.

    Args:
      dataset: one of :data:`BUILDERS`.
      data_dir: TFDS data folder (created if missing).
      manual_dir: the unpacked dataset (for ``synthetic``: a photo folder, or None for the bundled
        photos).
      skip_bad: skip and list bad files instead of failing.
      min_size: minimum image side in the ``train`` split (the training crop); 0 disables; None:
        the builder's default (384, the release's crop; 128 for ``synthetic``).
      config: TFDS builder config (MSEC: ``expert_a`` ... ``expert_e``, default ``expert_c``).
      **builder_kwargs: builder-specific options (synthetic: ``seed``, ``variants``,
        ``synthesis_config``).

    Returns:
      A :class:`BuildResult`.

    Raises:
      BadInputError: a bad file, without ``skip_bad`` (the message names the file).
      LayoutError: the folder does not have the dataset's layout, or a split has no usable pair.
    """
    if dataset not in BUILDERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(BUILDERS)}")
    cls = BUILDERS[dataset]
    if dataset == "synthetic":
        builder_kwargs["source_dir"] = manual_dir
        manual_dir = None
    elif manual_dir is None:
        raise LayoutError(f"--manual_dir is required for {dataset}. Expected layout:\n"
                          f"{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    for folder in (manual_dir, builder_kwargs.get("source_dir")):
        if folder is not None and (not pathlib.Path(folder).is_dir() or not any(pathlib.Path(folder).iterdir())):
            raise LayoutError(f"{folder}: manual folder not found or empty; pass --manual_dir pointing at "
                              f"the unpacked dataset. Expected layout:\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    data_dir = pathlib.Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".build-{dataset}-", dir=data_dir))
    try:
        builder = cls(data_dir=str(tmp), file_format="array_record", config=config,
                      skip_bad=skip_bad, min_size=min_size, **builder_kwargs)
        builder.download_and_prepare(
            download_dir=str(tmp / "downloads"),
            download_config=tfds.download.DownloadConfig(
                manual_dir=None if manual_dir is None else str(manual_dir), try_download_gcs=False))
        built = pathlib.Path(str(builder.data_dir))
        rel = built.relative_to(tmp)
        name = builder.name if builder.builder_config is None else f"{builder.name}/{builder.builder_config.name}"
        result = BuildResult(dataset=dataset, name=name, version=str(builder.version),
                             path=data_dir / rel,
                             splits={k: v.num_examples for k, v in builder.info.splits.items()},
                             skipped=list(builder.skipped), source_dir=builder.source_dir)
        options = {"skip_bad": skip_bad, "min_size": builder.min_size, "config": config,
                   **{k: (str(v) if isinstance(v, (os.PathLike, pathlib.Path)) else v)
                      for k, v in builder_kwargs.items() if k != "synthesis_config"}}
        if "synthesis_config" in builder_kwargs or dataset == "synthetic":
            options["synthesis_config"] = repr(getattr(builder, "synthesis_config", None))
            options["variants"] = getattr(builder, "variants", None)
        info = {**result.summary(), "options": options}
        (built / "build_info.json").write_text(json.dumps(info, indent=1) + "\n")
        _move_into_place(built, result.path)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(src: pathlib.Path, dst: pathlib.Path) -> None:
    """Rename ``src`` to ``dst`` (same filesystem), replacing an existing ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recnet_jax.data.build", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(BUILDERS))
    p.add_argument("--manual_dir", help="the unpacked dataset (synthetic: a photo folder; optional)")
    p.add_argument("--data_dir", required=True, help="TFDS data folder to build into")
    p.add_argument("--skip_bad", action="store_true", help="skip and list bad files instead of failing")
    p.add_argument("--min_size", type=int, default=None,
                   help="minimum image side in the train split (the crop size; 0 disables; default "
                        "384, the release's crop, or 128 for synthetic)")
    p.add_argument("--config", default=None, help="builder config (msec: expert_a..expert_e)")
    p.add_argument("--seed", type=int, default=0, help="synthetic only: synthesis seed")
    p.add_argument("--variants", type=int, default=None, help="synthetic only: pairs per photo and split")
    p.add_argument("--scale", type=float, default=None,
                   help="synthetic only: resize factor of the source photos (default 0.5 for the "
                        "bundled photos, 1 for --manual_dir)")
    args = p.parse_args(argv)

    tfds.disable_progress_bar()
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:  # pragma: no cover
        pass
    extra = ({"seed": args.seed, "variants": args.variants, "scale": args.scale}
             if args.dataset == "synthetic" else {})
    try:
        with contextlib.redirect_stdout(sys.stderr):  # TFDS prints progress; stdout is for the summary
            result = build_dataset(args.dataset, args.data_dir, args.manual_dir, skip_bad=args.skip_bad,
                                   min_size=args.min_size, config=args.config, **extra)
    except (BadInputError, LayoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = result.summary()
    for f in summary["skipped"]:
        print(f"skipped {f}: {summary['skip_reasons'][f]}", file=sys.stderr)
    print(f"built {result.name} {result.version} at {result.path}: {summary['splits']}", file=sys.stderr)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
