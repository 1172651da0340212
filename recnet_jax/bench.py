"""Model speed benchmark: jitted inference and a forward + backward of the L1 loss. Writes JSON.

    python -m recnet_jax.bench --out bench_results/model.json
    python -m recnet_jax.bench --impl fast lax --infer_size 512 --train_batch 4 --train_size 96

For each implementation of the layer primitives (``fast``: shifted sums + FFT blur, ``lax``: plain
``lax.conv_general_dilated``) it reports the compile time and the median / min wall time of
``--repeats`` runs (after one warm-up) of:

* ``infer``: ``model(images)`` at 1 x size x size (the default is the issue's 512^2);
* ``train_step``: ``value_and_grad`` of mean |model(x).image - y| w.r.t. the parameters at
  batch x size x size (the default is 4 x 96^2).

Each JSON record also names the backend, device, CPU count and the jax version, so numbers from
different machines are not mixed up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time


def time_calls(fn, *args, repeats: int) -> dict:
    """Times ``fn(*args)``: the first call (compile included), then ``repeats`` more.

    Returns {first_call_s, median_s, min_s, times_s}; every call is ``jax.block_until_ready``.
    """
    import jax
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return {"first_call_s": first, "median_s": statistics.median(times), "min_s": min(times),
            "times_s": times}


def _summary(timing: dict) -> dict:
    return {"first_call_s": round(timing["first_call_s"], 3),
            "median_s": round(timing["median_s"], 4), "min_s": round(timing["min_s"], 4)}


def bench(impl: str, *, infer_size: int, train_batch: int, train_size: int, repeats: int,
          norm_variant: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from recnet_jax.model import RECNet

    model = RECNet(norm_variant=norm_variant, conv_impl=impl, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)

    @jax.jit
    def infer(params, x):
        return nnx.merge(graphdef, params)(x).image

    def l1(params, x, y):
        return jnp.mean(jnp.abs(nnx.merge(graphdef, params)(x).image - y))

    grad_step = jax.jit(jax.value_and_grad(l1))

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(1, infer_size, infer_size, 3)), jnp.float32)
    result = {"infer": {"shape": list(x.shape), **_summary(time_calls(infer, params, x, repeats=repeats))}}
    xb = jnp.asarray(rng.uniform(size=(train_batch, train_size, train_size, 3)), jnp.float32)
    yb = jnp.asarray(rng.uniform(size=xb.shape), jnp.float32)
    result["train_step"] = {"shape": list(xb.shape), "loss": "l1",
                            **_summary(time_calls(grad_step, params, xb, yb, repeats=repeats))}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recnet_jax.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench_results/model.json", help="JSON output file")
    parser.add_argument("--impl", nargs="+", default=["fast", "lax"], choices=["fast", "lax", "auto"])
    parser.add_argument("--infer_size", type=int, default=512)
    parser.add_argument("--train_batch", type=int, default=4)
    parser.add_argument("--train_size", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--norm_variant", default="paper", choices=["paper", "official"])
    args = parser.parse_args(argv)

    import jax

    record = {
        "benchmark": "recnet_jax.bench",
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "norm_variant": args.norm_variant,
        "results": {},
    }
    for impl in args.impl:
        record["results"][impl] = bench(impl, infer_size=args.infer_size,
                                        train_batch=args.train_batch, train_size=args.train_size,
                                        repeats=args.repeats, norm_variant=args.norm_variant)
        print(json.dumps({impl: record["results"][impl]}), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
