"""The ``data`` suite of ``python -m recnet_jax.bench``: training input pipeline throughput at 384^2.

    python -m recnet_jax.bench --suite data --out bench_results/data.json [--data_dir DIR]
        [--train_batch 8] [--batches 20] [--repeats 3] [--modes threads,processes]

It reads the synthetic dataset from ``--data_dir`` (building it there from scikit-image's bundled
photos first if it is missing; default: a folder under the system temp dir, kept for the next run)
and times the full train pipeline of ``pipeline.train_iterator`` (ArrayRecord read + PNG decode +
resize-to-multiple-of-4 + crop + flips + batching), with 1 and 2 workers per mode, each in its own
process:

* ``threads``: grain ``ReadOptions(num_threads=n)`` in the main process (the default pipeline);
* ``processes``: n grain worker processes (``mp_prefetch``), each reading with one thread.

Records (``framework`` 'grain', ``kind`` 'pipeline_<mode>', ``h`` = ``w`` = 384): ``compile_s`` is the
start-up (iterator creation + the first batch), ``median_s`` the median time of a trial of
``--batches`` batches after 3 warm-up batches, and ``crops_per_s`` = batches x batch / median_s.
"""

from __future__ import annotations

import pathlib
import tempfile

from absl import flags

from recnet_jax import bench
from recnet_jax.data import build, pipeline

CROP = 384
WARMUP_BATCHES = 3


def _ensure_synthetic(data_dir: pathlib.Path) -> float:
    """Build the bundled synthetic dataset into data_dir unless it is there; return build seconds."""
    if (data_dir / "synthetic").is_dir():
        return 0.0
    timing = bench.time_calls(build.build_dataset, "synthetic", data_dir, None, repeats=0, sync=None,
                              memory=False)
    return timing["first_call_s"]


def specs(args) -> tuple[list[dict], dict]:
    """Builds the dataset if needed; returns one spec per (mode, workers) and the report's extras."""
    data_dir = pathlib.Path(args.data_dir or pathlib.Path(tempfile.gettempdir()) / "recnet_bench_data")
    build_s = _ensure_synthetic(data_dir)
    src = pipeline.open_source("synthetic", str(data_dir), "train", process_count=1)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in ("threads", "processes"):
            raise ValueError(f"--modes: unknown mode {m!r}; expected threads, processes")
    out = [dict(suite="data", mode=m, workers=n, batch=args.train_batch, batches=args.batches,
                repeats=args.repeats, data_dir=str(data_dir)) for m in modes for n in (1, 2)]
    extra = {"what": "train pipeline throughput (read+decode+resize-to-x4+crop+flips+batch), crops/s",
             "dataset": "synthetic (scikit-image bundled photos, 512x512 to 741x500)",
             "train_examples": len(src), "crop": CROP, "build_s": round(build_s, 1)}
    return out, extra


def measure(spec: dict) -> dict:
    """Times one (mode, workers) setting -> a record (the module docstring defines its fields)."""
    if not flags.FLAGS.is_parsed():   # grain worker processes read absl flags
        flags.FLAGS.mark_as_parsed()
    mode, workers, b = spec["mode"], spec["workers"], spec["batch"]
    kw = dict(batch_size=b, crop_size=CROP, seed=0, process_index=0, process_count=1)
    if mode == "threads":
        kw.update(num_threads=workers)
    elif mode == "processes":
        kw.update(num_threads=1, num_workers=workers)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    holder = {}

    def start():
        holder["it"] = pipeline.train_iterator("synthetic", spec["data_dir"], **kw)
        return next(holder["it"])

    startup = bench.time_calls(start, repeats=0, warmup=1, sync=None, memory=False)
    first = next(holder["it"])
    assert first["input"].shape == (b, CROP, CROP, 3)
    for _ in range(WARMUP_BATCHES - 2):
        next(holder["it"])
    trial = lambda: [next(holder["it"]) for _ in range(spec["batches"])]  # noqa: E731
    timing = bench.time_calls(trial, repeats=spec["repeats"], warmup=0, sync=None)
    crops = spec["batches"] * b
    return bench.make_record(
        "grain", f"pipeline_{mode}", b, CROP, CROP, timing, startup["first_call_s"],
        mode=mode, workers=workers, batches_per_trial=spec["batches"],
        crops_per_s=round(crops / timing["median_s"], 1),
        ms_per_batch=round(1000 * timing["median_s"] / spec["batches"], 1),
        trials_crops_per_s=[round(crops / t, 1) for t in timing["times_s"]])
