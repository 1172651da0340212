"""The ``losses`` suite of ``python -m recnet_jax.bench``: the objective's share of a training step.

    python -m recnet_jax.bench --suite losses --out bench_results/losses.json \
        [--train_batch 8 --train_size 256 --repeats 5 --only step_full,step_l1]

Each timed function is jitted, compiled ahead of time (``compile_s``) and timed by
:func:`recnet_jax.bench.time_calls` in its own process; all float32, a freshly initialised RECNet
(``--conv_impl``, the default 'paper' variant) and He-initialised VGG16 features (which cost what
ImageNet weights cost). Records (``kind`` = the function's name, :data:`DEFINITIONS`):

* ``step_full``: value_and_grad w.r.t. the model parameters of model forward + the full objective
  (L1, SSIM, colour, mask BCE, ECR): a training step without the optimizer update.
* ``step_no_ecr``: the same with the ECR weight 0 (the VGG is not run).
* ``step_l1``: the same with the L1 term only (the cheapest objective the model can be trained with).
* ``loss_full`` / ``loss_no_ecr``: value_and_grad of the objective alone w.r.t. (image, mask), for fixed
  model outputs: the objective's own forward + backward cost, without the model.
* ``model_fwd``: the model's forward alone.

The report's ``shares``: ``objective_share = (step_full - step_l1) / step_full`` (the step time the
objective adds beyond an L1-only step), ``ecr_share = (step_full - step_no_ecr) / step_full`` and
``loss_alone_share = loss_full / step_full``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from recnet_jax import bench, losses
from recnet_jax.model import RECNet

CASES = ("step_full", "step_no_ecr", "step_l1", "loss_full", "loss_no_ecr", "model_fwd")
DEFINITIONS = {
    "step_full": "jit(value_and_grad wrt params)(model fwd + full objective)",
    "step_no_ecr": "as step_full, ECR weight 0 (no VGG)",
    "step_l1": "as step_full, L1 only",
    "loss_full": "jit(value_and_grad wrt (image, mask))(full objective), fixed model outputs",
    "loss_no_ecr": "as loss_full, ECR weight 0",
    "model_fwd": "jit(model forward)",
    "objective_share": "(step_full - step_l1) / step_full",
    "ecr_share": "(step_full - step_no_ecr) / step_full",
    "loss_alone_share": "loss_full / step_full",
}
_WEIGHTS = {
    "step_full": None, "loss_full": None,
    "step_no_ecr": {"ecr": 0.0}, "loss_no_ecr": {"ecr": 0.0},
    "step_l1": {"l1": 1.0, "ssim": 0.0, "mask": 0.0, "color": 0.0, "ecr": 0.0},
}


class _Out(NamedTuple):
    """``.image`` [B, H, W, 3] and ``.mask`` [B, H, W, 1] for :func:`losses.loss_terms`."""

    image: jax.Array
    mask: jax.Array


def specs(args) -> list[dict]:
    """One spec per timed function (``--only`` selects)."""
    which = [w for w in args.only.split(",") if w] or list(CASES)
    unknown = sorted(set(which) - set(CASES))
    if unknown:
        raise ValueError(f"--only: unknown functions {unknown}; known: {CASES}")
    return [dict(suite="losses", case=c, batch=args.train_batch, size=args.train_size,
                 repeats=args.repeats, warmup=args.warmup, conv_impl=args.conv_impl,
                 vgg_precision=None if args.vgg_precision == "global" else args.vgg_precision)
            for c in CASES if c in which]


def measure(spec: dict) -> dict:
    """Compiles and times ``spec['case']`` at ``spec['batch']`` x ``spec['size']``^2 -> a record."""
    case, b, size = spec["case"], spec["batch"], spec["size"]
    lq, gt = (jnp.asarray(a) for a in bench.synthetic_pair(b, size, size))
    model = RECNet(conv_impl=spec["conv_impl"], rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    vgg = losses.VGG16Features.random(0, precision=spec["vgg_precision"])
    fwd = jax.jit(lambda p, rest, x: nnx.merge(graphdef, p, rest)(x))
    weights = _WEIGHTS.get(case)
    if case.startswith("step_"):
        def total(p, rest, vgg, lq, gt):
            out = nnx.merge(graphdef, p, rest)(lq)
            return losses.loss_terms(out, lq, gt, vgg, weights)["total"]

        fn, args = jax.jit(jax.value_and_grad(total)), (params, rest, vgg, lq, gt)
    elif case.startswith("loss_"):
        def total(image, mask, vgg, lq, gt):
            return losses.loss_terms(_Out(image, mask), lq, gt, vgg, weights)["total"]

        out = fwd(params, rest, lq)
        fn, args = jax.jit(jax.value_and_grad(total, argnums=(0, 1))), (out.image, out.mask, vgg, lq, gt)
    elif case == "model_fwd":
        fn, args = fwd, (params, rest, lq)
    else:
        raise ValueError(f"unknown losses case {case!r}; known: {CASES}")
    compiled, compile_s = bench.aot_compile(fn, *args)
    timing = bench.time_calls(compiled, *args, repeats=spec["repeats"], warmup=spec["warmup"])
    return bench.make_record("jax", case, b, size, size, timing, compile_s,
                             conv_impl=spec["conv_impl"],
                             vgg_precision=spec["vgg_precision"] or "global default")


def summary(records: Sequence[dict]) -> dict[str, Any]:
    """{'shares': ..., 'definitions': ...} from the records' medians."""
    med = {r["kind"]: r["median_s"] for r in records}
    shares = {}
    if "step_full" in med:
        if "step_l1" in med:
            shares["objective_share"] = (med["step_full"] - med["step_l1"]) / med["step_full"]
        if "step_no_ecr" in med:
            shares["ecr_share"] = (med["step_full"] - med["step_no_ecr"]) / med["step_full"]
        if "loss_full" in med:
            shares["loss_alone_share"] = med["loss_full"] / med["step_full"]
    return {"shares": {k: round(v, 4) for k, v in shares.items()}, "definitions": DEFINITIONS}
