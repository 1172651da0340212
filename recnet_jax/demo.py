"""``make demo``: correct a mixed-exposure photo end to end, with no download.

Takes a well-exposed photo that ships with scikit-image (``chelsea``, the synthetic dataset's
held-out scene), gives it over- and under-exposed regions with the synthetic mixed-exposure model
(``recnet_jax.data.synthesis``, fixed seed), runs RECNet on it and writes to ``--out``:

* ``input.png``, ``output.png``, ``target.png``, ``mask.png`` and ``comparison.png`` (side by side);
* ``summary.json``: PSNR/SSIM of input and output against the target (the evaluation protocol:
  uint8-quantised images, dm_pix), the image size, the weights used and the wall times.

Weights: ``--checkpoint DIR`` (an Orbax model checkpoint, e.g. from ``python -m recnet_jax.convert
to-jax``) or, by default, a randomly initialised model. **Random weights are untrained**: the output
then shows that the pipeline runs, not what RECNet can do, and the demo says so.

    python -m recnet_jax.demo --out out/demo [--checkpoint DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np


def _save_png(path: str, image: np.ndarray) -> None:
    from PIL import Image
    Image.fromarray(image).save(path)


def _metrics(a: np.ndarray, b: np.ndarray) -> dict:
    import dm_pix as pix
    import jax.numpy as jnp
    x, y = jnp.asarray(a, jnp.float32) / 255.0, jnp.asarray(b, jnp.float32) / 255.0
    return {"psnr": round(float(pix.psnr(x, y)), 3), "ssim": round(float(pix.ssim(x, y)), 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recnet_jax.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/demo", help="output folder (created)")
    parser.add_argument("--checkpoint", default="", help="Orbax model checkpoint; default: untrained")
    parser.add_argument("--photo", default="", help="a well-exposed RGB photo; default: bundled chelsea")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic exposure map")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("demo")

    from PIL import Image
    from flax import nnx

    import recnet_jax
    from recnet_jax import checkpoint, enhance
    from recnet_jax.data import synthesis, synthetic

    photo_path = args.photo or str(synthetic.bundled_photo_dir() / synthetic.BUNDLED_TEST[0])
    try:
        with Image.open(photo_path) as im:
            photo = synthetic.crop_to_multiple(np.asarray(im.convert("RGB")))
    except (OSError, ValueError) as e:
        parser.error(f"--photo {photo_path}: cannot read it as an image ({e})")
    pair = synthesis.synthesize_pair(photo, seed=args.seed)
    h, w = photo.shape[:2]
    under = float(np.mean(pair.ev_map < -0.5))
    over = float(np.mean(pair.ev_map > 0.5))
    log.info("photo %s (%dx%d): synthetic exposure map with %.0f%% of pixels under-exposed and "
             "%.0f%% over-exposed (|EV| > 0.5)", photo_path, w, h, 100 * under, 100 * over)

    t0 = time.perf_counter()
    if args.checkpoint:
        model = checkpoint.load_model(args.checkpoint)
        weights = f"checkpoint {args.checkpoint}"
    else:
        model = recnet_jax.RECNet(rngs=nnx.Rngs(args.seed))
        weights = "random initialisation (UNTRAINED)"
        log.warning("NOTE: no --checkpoint given, so RECNet runs with randomly initialised, "
                    "UNTRAINED weights. The output shows that the pipeline works end to end; it is "
                    "not a corrected photo. Train a model (or convert official weights with "
                    "`python -m recnet_jax.convert to-jax`) and pass --checkpoint.")
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    output, mask = enhance.enhance_image(model, pair.input)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    enhance.enhance_image(model, pair.input)
    t_run = time.perf_counter() - t0

    os.makedirs(args.out, exist_ok=True)
    mask_u8 = np.round(mask * 255).astype(np.uint8)
    _save_png(os.path.join(args.out, "input.png"), pair.input)
    _save_png(os.path.join(args.out, "output.png"), output)
    _save_png(os.path.join(args.out, "target.png"), pair.target)
    _save_png(os.path.join(args.out, "mask.png"), mask_u8)
    mask_rgb = np.repeat(mask_u8[..., None], 3, axis=-1)
    _save_png(os.path.join(args.out, "comparison.png"),
              np.concatenate([pair.input, output, pair.target, mask_rgb], axis=1))
    summary = {
        "photo": os.path.basename(photo_path), "size": [h, w], "seed": args.seed,
        "weights": weights, "trained": bool(args.checkpoint),
        "input_vs_target": _metrics(pair.input, pair.target),
        "output_vs_target": _metrics(output, pair.target),
        "seconds": {"init": round(t_init, 2), "first_call_with_compile": round(t_first, 2),
                    "inference": round(t_run, 3)},
        "files": ["input.png", "output.png", "target.png", "mask.png", "comparison.png"],
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    log.info("wrote %s/{input,output,target,mask,comparison}.png and summary.json", args.out)
    if not args.checkpoint:
        log.warning("REMINDER: these weights are untrained; output PSNR means nothing yet.")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
