"""Benchmark: the training objective's share of a training step's time (default batch 8 x 256^2).

  python -m recnet_jax.losses.bench --out bench_results/losses.json [--batch 8 --size 256 --reps 5]

Every timing is the median wall time of a jitted function after one warm-up call (which compiles), with
``block_until_ready`` on its outputs. The timed functions (all float32; a freshly initialised RECNet with the
default config, and He-initialised VGG16 features, which cost what ImageNet weights cost):

* ``step_full``: value_and_grad w.r.t. the model parameters of model forward + the full objective
  (L1, SSIM, colour, mask BCE, ECR): a training step without the optimizer update.
* ``step_no_ecr``: the same with the ECR weight 0 (the VGG is not run).
* ``step_l1``: the same with the L1 term only (the cheapest objective the model can be trained with).
* ``loss_full`` / ``loss_no_ecr``: value_and_grad of the objective alone w.r.t. (image, mask), for fixed
  model outputs: the objective's own forward + backward cost, without the model.
* ``model_fwd``: the model's forward alone.

Shares reported: ``objective_share = (step_full - step_l1) / step_full`` (the step time the objective adds
beyond an L1-only step), ``ecr_share = (step_full - step_no_ecr) / step_full``, and
``loss_alone_share = loss_full / step_full``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from recnet_jax.bench import time_calls


def run(
    batch: int = 8,
    size: int = 256,
    reps: int = 5,
    conv_impl: str = "auto",
    which: Sequence[str] | None = None,
    vgg_precision: str | None = "HIGHEST",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Times the functions named in ``which`` (default: all; see the module docstring) and returns the report."""
    from flax import nnx  # pylint: disable=import-outside-toplevel

    from recnet_jax import RECNet  # pylint: disable=import-outside-toplevel
    from recnet_jax import losses  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    gt = rng.uniform(0.05, 0.95, (batch, size, size, 3)).astype(np.float32)
    lq = np.clip(gt * rng.uniform(0.2, 1.6, (batch, 1, 1, 3)), 0, 1).astype(np.float32)
    lq, gt = jnp.asarray(lq), jnp.asarray(gt)
    model = RECNet(conv_impl=conv_impl, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    vgg = losses.VGG16Features.random(0, precision=vgg_precision)

    def step(weights):
        def total(p, rest, vgg, lq, gt):
            out = nnx.merge(graphdef, p, rest)(lq)
            return losses.loss_terms(out, lq, gt, vgg, weights)["total"]

        return jax.jit(jax.value_and_grad(total))

    def loss_alone(weights):
        def total(image, mask, vgg, lq, gt):
            return losses.loss_terms(_Out(image, mask), lq, gt, vgg, weights)["total"]

        return jax.jit(jax.value_and_grad(total, argnums=(0, 1)))

    no_ecr = {"ecr": 0.0}
    l1_only = {"l1": 1.0, "ssim": 0.0, "mask": 0.0, "color": 0.0, "ecr": 0.0}
    fwd = jax.jit(lambda p, rest, x: nnx.merge(graphdef, p, rest)(x))
    out = fwd(params, rest, lq)
    image, mask = out.image, out.mask
    cases = {
        "step_full": (step(None), (params, rest, vgg, lq, gt)),
        "step_no_ecr": (step(no_ecr), (params, rest, vgg, lq, gt)),
        "step_l1": (step(l1_only), (params, rest, vgg, lq, gt)),
        "loss_full": (loss_alone(None), (image, mask, vgg, lq, gt)),
        "loss_no_ecr": (loss_alone(no_ecr), (image, mask, vgg, lq, gt)),
        "model_fwd": (fwd, (params, rest, lq)),
    }
    timings = {}
    for name, (fn, args) in cases.items():
        if which and name not in which:
            continue
        timings[name] = time_calls(fn, *args, repeats=reps)
        log(
            f"{name}: median {timings[name]['median_s'] * 1e3:.1f} ms (first call {timings[name]['first_call_s']:.1f} s)"
        )
    med = {k: v["median_s"] for k, v in timings.items()}
    shares = {}
    if "step_full" in med:
        if "step_l1" in med:
            shares["objective_share"] = (med["step_full"] - med["step_l1"]) / med["step_full"]
        if "step_no_ecr" in med:
            shares["ecr_share"] = (med["step_full"] - med["step_no_ecr"]) / med["step_full"]
        if "loss_full" in med:
            shares["loss_alone_share"] = med["loss_full"] / med["step_full"]
    dev = jax.devices()[0]
    return {
        "batch": batch,
        "size": size,
        "reps": reps,
        "conv_impl": conv_impl,
        "dtype": "float32",
        "vgg_precision": vgg_precision or "global default",
        "device": {"platform": dev.platform, "kind": dev.device_kind, "count": jax.device_count()},
        "versions": {"jax": jax.__version__, "python": platform.python_version()},
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
        "definitions": {
            "step_full": "jit(value_and_grad wrt params)(model fwd + full objective)",
            "step_no_ecr": "as step_full, ECR weight 0 (no VGG)",
            "step_l1": "as step_full, L1 only",
            "loss_full": "jit(value_and_grad wrt (image, mask))(full objective), fixed model outputs",
            "loss_no_ecr": "as loss_full, ECR weight 0",
            "model_fwd": "jit(model forward)",
            "objective_share": "(step_full - step_l1) / step_full",
            "ecr_share": "(step_full - step_no_ecr) / step_full",
            "loss_alone_share": "loss_full / step_full",
            "timing": "median wall seconds over reps after one warm-up (compile) call",
        },
        "timings": timings,
        "shares": shares,
    }


class _Out:
    """``.image`` [B, H, W, 3] and ``.mask`` [B, H, W, 1] for :func:`loss_terms`."""

    def __init__(self, image, mask):
        self.image, self.mask = image, mask


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recnet_jax.losses.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, help="JSON report path")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--conv-impl", default="auto", choices=("auto", "fast", "lax"))
    parser.add_argument("--only", default="", help="comma-separated subset of the timed functions")
    parser.add_argument(
        "--vgg-precision",
        default="HIGHEST",
        choices=("HIGHEST", "HIGH", "DEFAULT", "global"),
        help="VGG conv precision; 'global' follows jax_default_matmul_precision",
    )
    args = parser.parse_args(argv)
    report = run(
        args.batch,
        args.size,
        args.reps,
        args.conv_impl,
        which=[w for w in args.only.split(",") if w] or None,
        vgg_precision=None if args.vgg_precision == "global" else args.vgg_precision,
    )
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["shares"]), f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
