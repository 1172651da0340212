"""``make demo``'s last step: the trained demo model on held-out synthetic photos, before and after.

``make demo`` builds the synthetic dataset (if missing), trains ``configs/demo.py`` through
``recnet_jax.main`` into ``runs/demo`` and then runs this module, which loads the exported model
(``WORKDIR/model``), corrects the held-out test images (a scene that training never saw) and
writes into the workdir:

* ``before_after.png``: one row per held-out image: input | output | target;
* ``results.json``: ``input_psnr``, ``output_psnr``, ``input_ssim``, ``output_ssim`` (the paper's
  protocol, :mod:`recnet_jax.metrics`), ``num_images``, ``steps``, ``train_seconds`` and
  ``checkpoint`` (the exported weights, which ``recnet-enhance --checkpoint`` reads).

    python -m recnet_jax.demo --workdir runs/demo [--config configs/demo.py]
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from PIL import Image

from recnet_jax import checkpointing, evaluate, runtime

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line (defined only when run as a program, so that importing this module next
    to ``recnet_jax.main`` defines no flag twice)."""
    flags.DEFINE_string("workdir", "runs/demo", "The demo's training workdir.")
    config_flags.DEFINE_config_file("config", "configs/demo.py", "The demo's config.")


def before_after_grid(samples: list[dict], gap: int = 4) -> np.ndarray:
    """Rows of input | output | target (uint8 [H, W, 3] each), white gaps between them."""
    rows = []
    width = max(3 * s["input"].shape[1] + 2 * gap for s in samples)
    for s in samples:
        h = s["input"].shape[0]
        sep = np.full((h, gap, 3), 255, np.uint8)
        row = np.concatenate([s["input"], sep, s["output"], sep, s["target"]], axis=1)
        row = np.pad(row, ((0, gap), (0, width - row.shape[1]), (0, 0)), constant_values=255)
        rows.append(row)
    return np.concatenate(rows, axis=0)[:-gap]


def run(config, workdir: str) -> dict:
    """Evaluates ``WORKDIR/model`` on the held-out split; writes the grid and results.json."""
    export = os.path.join(os.path.abspath(workdir), "model")
    if not os.path.isdir(export):
        raise FileNotFoundError(
            f"{export} not found: train first with `python -m recnet_jax.main --config "
            f"configs/demo.py --workdir {workdir}` (or run `make demo`)")
    model = checkpointing.load_model(export)
    results = evaluate.evaluate_model(model, config.data.dataset, config.data.data_dir,
                                      split=config.data.eval_split, num_samples=10**6)
    with open(os.path.join(workdir, "eval_results.json")) as f:
        trained = json.load(f)
    overall = results["groups"]["all"]
    grid = os.path.join(workdir, "before_after.png")
    Image.fromarray(before_after_grid(results["samples"])).save(grid)
    summary = {
        "input_psnr": round(overall["input_psnr"], 3), "output_psnr": round(overall["psnr"], 3),
        "input_ssim": round(overall["input_ssim"], 4), "output_ssim": round(overall["ssim"], 4),
        "num_images": results["num_images"], "steps": trained["steps"],
        "train_seconds": trained["train_seconds"], "checkpoint": export,
        "images": [r["name"] for r in results["per_image"]], "grid": grid,
        "vgg": ("random init (no ImageNet weights can be downloaded here)"
                if config.loss.vgg_random_init else config.loss.vgg_weights),
    }
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def main(argv):
    del argv
    runtime.quiet_logs()
    try:
        s = run(FLAGS.config, FLAGS.workdir)
    except FileNotFoundError as e:
        logging.error("%s", e)
        raise SystemExit(1)
    gain = s["output_psnr"] - s["input_psnr"]
    logging.info(
        "RECNet demo: %d held-out mixed-exposure images (a scene training never saw), after %d "
        "training steps (%.0f s). PSNR %.2f dB -> %.2f dB (%+.2f dB), SSIM %.4f -> %.4f: the "
        "input's and RECNet's output's distance to the well-exposed original (higher is "
        "closer). The ECR used %s.", s["num_images"], s["steps"], s["train_seconds"],
        s["input_psnr"], s["output_psnr"], gain, s["input_ssim"], s["output_ssim"], s["vgg"])
    logging.info("before/after grid (input | output | target): %s", s["grid"])
    logging.info("results: %s; weights: %s (try: recnet-enhance PHOTO --checkpoint %s --out out/)",
                 os.path.join(FLAGS.workdir, "results.json"), s["checkpoint"], s["checkpoint"])


if __name__ == "__main__":
    runtime.use_huge_pages()
    define_flags()
    app.run(main)
