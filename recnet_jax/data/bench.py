"""Throughput of the training input pipeline, in crops/s, at 384 x 384 with 1 and 2 workers.

Command::

    python -m recnet_jax.data.bench --out bench_results/data.json [--data_dir DIR]
        [--batch_size 8] [--batches 20] [--repeats 3] [--modes threads,processes]

It reads the synthetic dataset from ``--data_dir`` (building it there from scikit-image's bundled
photos first if it is missing; default: a temporary folder) and times the full train pipeline of
``pipeline.train_iterator`` (ArrayRecord read + PNG decode + resize-to-multiple-of-4 + crop + flips
+ batching). Worker modes:

* ``threads``: grain ``ReadOptions(num_threads=n)`` in the main process (the default pipeline);
* ``processes``: n grain worker processes (``mp_prefetch``), each reading with one thread.

The JSON holds, per mode and worker count: ``crops_per_s`` (steady state after 3 warm-up batches,
median of ``--repeats`` trials, each trial listed in ``trials_crops_per_s``), ``first_batch_s``
(start-up latency) and ``ms_per_batch``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

from recnet_jax.data import pipeline

CROP = 384


def _ensure_synthetic(data_dir: pathlib.Path) -> float:
    """Build the bundled synthetic dataset into data_dir unless it is there; return build seconds."""
    if (data_dir / "synthetic").is_dir():
        return 0.0
    from recnet_jax.data import build

    t0 = time.perf_counter()
    build.build_dataset("synthetic", data_dir, None)
    return time.perf_counter() - t0


def measure(data_dir: str, *, mode: str, workers: int, batch_size: int, batches: int,
            repeats: int = 3, warmup: int = 3, seed: int = 0) -> dict:
    """Time ``repeats`` trials of ``batches`` batches (after ``warmup``) of the 384^2 train
    pipeline; ``crops_per_s`` is the median trial (the machine may be shared)."""
    kw = dict(batch_size=batch_size, crop_size=CROP, seed=seed, process_index=0, process_count=1)
    if mode == "threads":
        it = pipeline.train_iterator("synthetic", data_dir, num_threads=workers, **kw)
    elif mode == "processes":
        it = pipeline.train_iterator("synthetic", data_dir, num_threads=1, num_workers=workers, **kw)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    t0 = time.perf_counter()
    batch = next(it)
    first = time.perf_counter() - t0
    assert batch["input"].shape == (batch_size, CROP, CROP, 3)
    for _ in range(warmup - 1):
        next(it)
    trials = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batches):
            next(it)
        trials.append(batches * batch_size / (time.perf_counter() - t0))
    del it
    med = statistics.median(trials)
    return {"mode": mode, "workers": workers, "crops_per_s": round(med, 1),
            "ms_per_batch": round(1000 * batch_size / med, 1), "first_batch_s": round(first, 2),
            "trials_crops_per_s": [round(t, 1) for t in trials], "batches_per_trial": batches}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recnet_jax.data.bench", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--data_dir", default=None, help="where the synthetic dataset is (built if missing)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--batches", type=int, default=20, help="timed batches per trial")
    p.add_argument("--repeats", type=int, default=3, help="trials per setting (median reported)")
    p.add_argument("--modes", default="threads,processes", help="comma list: threads, processes")
    args = p.parse_args(argv)

    from absl import flags  # grain worker processes read absl flags
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = pathlib.Path(args.data_dir or tmp)
        build_s = _ensure_synthetic(data_dir)
        src = pipeline.open_source("synthetic", str(data_dir), "train", process_count=1)
        results = []
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            for workers in (1, 2):
                r = measure(str(data_dir), mode=mode, workers=workers, batch_size=args.batch_size,
                            batches=args.batches, repeats=args.repeats)
                print(json.dumps(r), file=sys.stderr)
                results.append(r)
        report = {
            "what": "train pipeline throughput (read+decode+resize-to-x4+crop+flips+batch), crops/s",
            "dataset": "synthetic (scikit-image bundled photos, 512x512 to 741x500)",
            "train_examples": len(src), "crop": CROP, "batch_size": args.batch_size,
            "build_s": round(build_s, 1), "results": results,
            "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
        }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
