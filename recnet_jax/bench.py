"""The benchmark entry point: one timer, one record format, each configuration in its own process.

    python -m recnet_jax.bench [--sizes 256,512,1024,2048] [--train] [--torch] [--repeats N] --out FILE.json
    python -m recnet_jax.bench --suite losses --out FILE.json [--train_batch 8 --train_size 256]
    python -m recnet_jax.bench --suite data --out FILE.json [--data_dir DIR]
    python -m recnet_jax.bench --suite enhance --out FILE.json [--sizes 1632x1224,4000x3000 --lean auto,on,off]

Suites (``--suite``):

* ``model`` (default): inference at batch 1 x size^2 for each of ``--sizes`` (fp32; JAX through
  ``recnet_jax.inference``, what ``enhance`` runs: one program below 1.5 MP, the staged memory-lean
  path from 1.5 MP, field ``path``); with ``--train`` the training step at ``--train_batch`` x ``--train_size``^2 (default
  8 x 256^2: forward + full objective + backward + Adam), for JAX (the trainer's own step function,
  ``recnet_jax.train_step.make_train_step``) and, with ``--torch``, for the PyTorch twin
  (``recnet_jax.torch_twin``: the release's model, objective and ``torch.optim.Adam``) in the same run,
  with the ratio. Both use the same ``--norm_variant`` (default ``official``, the release's).
* ``losses``: the objective's share of a training step (``recnet_jax/losses/bench.py``).
* ``data``: the training input pipeline's throughput (``recnet_jax/data/bench.py``).
* ``enhance``: full-resolution enhancement (``enhance.enhance_array``) per photo size and
  inference path, wall time and peak memory per pixel (``recnet_jax/enhance_bench.py``).

The parent process re-invokes ``python -m recnet_jax.bench --one '<json spec>'`` per configuration
(so each record's ``peak_rss_mb`` is that configuration's own) and reads one ``BENCH_RESULT <json>``
line back. Every record has ``framework``, ``kind``, ``batch``, ``h``, ``w``, ``median_s`` (the median
of ``--repeats`` timed calls after ``--warmup`` warm-up calls, all synchronised), ``min_s``,
``times_s``, ``compile_s`` (JAX: ``lower().compile()``, timed apart from the calls; PyTorch eager:
null), ``first_call_s`` (the first warm-up call), ``peak_rss_mb`` (the process's peak resident set,
imports and compile included), ``calls_peak_rss_mb`` (the peak over the warm-up and timed calls
alone; Linux), ``base_rss_mb`` (the resident set before the first call: imports, weights,
inputs, compiled code) and ``calls_extra_rss_mb`` (the difference: the memory the calls themselves
take, independent of what the process imported; the PyTorch children import jax and flax too, about
150 MB, because they run inside this package), plus suite fields (``mpix_per_s`` for inference,
``threads``) and ``load_avg_1m`` (the machine's load when the record was made: on a busy machine
the numbers are not comparable). The JSON also records the versions, thread settings and
the machine. The persistent compilation cache is off in the children unless ``--compile_cache``, so
``compile_s`` is a real compile.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from recnet_jax import runtime

SUITES = ("model", "losses", "data", "enhance")
RECORD_FIELDS = ("framework", "kind", "batch", "h", "w", "median_s", "compile_s", "peak_rss_mb")
RESULT_PREFIX = "BENCH_RESULT "
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS",
              "JAX_PLATFORMS", "TF_NUM_INTRAOP_THREADS", "GLIBC_TUNABLES")
_REPO = pathlib.Path(__file__).resolve().parents[1]
# The vector extensions that move the ratios: on an AVX2-only CPU the PyTorch twin's ten 31x31
# mask blurs (oneDNN) take 0.8 s each at 512^2, longer in all than its whole 512^2 forward pass
# (1.0-1.2 s) on the AVX-512 CPUs measured.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


# --------------------------------------------------------------------------- timer and records

def time_calls(fn: Callable, *args, repeats: int = 5, warmup: int = 1,
               sync: Callable[[Any], Any] | None = jax.block_until_ready, memory: bool = True) -> dict:
    """The package's one timer: ``warmup`` warm-up calls, then ``repeats`` timed ones.

    Every call's result goes through ``sync`` (default ``jax.block_until_ready``; None for code that
    returns only when done, e.g. PyTorch on CPU) before the clock stops. With ``memory``, the
    process's resident set is read before the first call and its peak over the calls alone (Linux:
    the high-water mark is reset first through ``/proc/self/clear_refs``; the peak before the
    calls is kept too). Freed heap (the compiler's) goes back to the OS before that, for every
    framework alike (:func:`recnet_jax.runtime.release_freed_memory`, as the trainer does after
    its first step).

    Returns:
      {first_call_s (the first warm-up call, None without warm-up), median_s, min_s (None when
      repeats is 0), times_s (the timed calls)} and, with ``memory``, {base_rss_mb (the resident set
      before the calls), peak_before_calls_mb (the process's peak until then), calls_peak_rss_mb (the
      peak during the calls; None where it cannot be reset)}.
    """
    sync = sync or (lambda out: out)
    mem = {}
    if memory:
        runtime.release_freed_memory()   # as the trainer does after its first step
        mem = {"base_rss_mb": current_rss_mb(), "peak_before_calls_mb": peak_rss_mb()}
        reset = _reset_peak_rss()
    first = None
    for i in range(warmup):
        t0 = time.perf_counter()
        sync(fn(*args))
        if i == 0:
            first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sync(fn(*args))
        times.append(time.perf_counter() - t0)
    if memory:
        mem["calls_peak_rss_mb"] = peak_rss_mb() if reset else None
    return {"first_call_s": first, "median_s": statistics.median(times) if times else None,
            "min_s": min(times) if times else None, "times_s": times, **mem}


def peak_rss_mb() -> float:
    """This process's peak resident set size (since it started, or since the last reset), MiB.

    Linux: VmHWM of /proc/self/status (``ru_maxrss`` can carry the parent's size from the fork);
    elsewhere ``ru_maxrss``.
    """
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024   # bytes on macOS, KiB on Linux


def current_rss_mb() -> float:
    """This process's resident set size now, MiB (the peak where /proc is missing)."""
    return _status_mb("VmRSS") or peak_rss_mb()


def _status_mb(field: str) -> float | None:
    """A ``kB`` field of /proc/self/status in MiB, None without /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (VmHWM) of this process; False where that is unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def make_record(framework: str, kind: str, batch: int, h: int, w: int, timing: dict,
                compile_s: float | None, **extra) -> dict:
    """One result in the common format (the module docstring lists the fields) from a
    :func:`time_calls` result; ``extra`` is appended (suite-specific fields)."""
    rnd = lambda v, n=5: None if v is None else round(float(v), n)  # noqa: E731
    return {"framework": framework, "kind": kind, "batch": int(batch), "h": int(h), "w": int(w),
            "median_s": rnd(timing["median_s"]), "min_s": rnd(timing["min_s"]),
            "times_s": [rnd(t) for t in timing["times_s"]], "compile_s": rnd(compile_s, 3),
            "first_call_s": rnd(timing["first_call_s"], 3),
            "peak_rss_mb": round(max(peak_rss_mb(), timing.get("peak_before_calls_mb") or 0.0), 1),
            "calls_peak_rss_mb": rnd(timing.get("calls_peak_rss_mb"), 1),
            "base_rss_mb": rnd(timing.get("base_rss_mb"), 1),
            "calls_extra_rss_mb": (rnd(timing["calls_peak_rss_mb"] - timing["base_rss_mb"], 1)
                                   if timing.get("calls_peak_rss_mb") and timing.get("base_rss_mb")
                                   else None),
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            **extra}


def environment() -> dict:
    """Versions, thread settings and the machine (recorded once per report)."""
    cpu_model = ""
    cpu_flags: list[str] = []
    mem_gb = None
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read().splitlines()
        cpu_model = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), "")
        flags = next((ln.split(":", 1)[1].split() for ln in info if ln.startswith("flags")), [])
        cpu_flags = [f for f in CPU_FLAGS if f in flags]
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    versions = {"python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__}
    for name in ("jaxlib", "flax", "optax", "torch", "grain"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    dev = jax.devices()[0]
    child_env = runtime.huge_pages_env()
    return {
        "machine": {"platform": platform.platform(), "arch": platform.machine(), "cpu": cpu_model,
                    "cpu_flags": cpu_flags,
                    "cpu_count": os.cpu_count(), "cpus_usable": affinity, "mem_total_gb": mem_gb,
                    "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
        "jax_backend": {"platform": dev.platform, "device_kind": dev.device_kind,
                        "device_count": jax.device_count()},
        "versions": versions,
        "thread_env": {k: child_env.get(k) for k in THREAD_ENV},   # what the children run with
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
    }


def synthetic_pair(batch: int, h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic (input, target) pair of float32 [batch, h, w, 3] images in [0, 1]: the target
    uniform in [0.05, 0.95], the input a per-image, per-channel exposure change of it."""
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.05, 0.95, (batch, h, w, 3)).astype(np.float32)
    lq = np.clip(gt * rng.uniform(0.2, 1.6, (batch, 1, 1, 3)), 0, 1).astype(np.float32)
    return lq, gt


def aot_compile(fn, *args) -> tuple[Callable, float]:
    """``fn.lower(*args).compile()`` and its wall time (a jitted ``fn``)."""
    out = {}
    timing = time_calls(lambda: out.setdefault("compiled", fn.lower(*args).compile()), repeats=0,
                        sync=None, memory=False)
    return out["compiled"], timing["first_call_s"]


# --------------------------------------------------------------------------- the model suite

def _jax_infer(spec: dict) -> dict:
    from flax import nnx  # pylint: disable=import-outside-toplevel

    from recnet_jax.model import RECNet  # pylint: disable=import-outside-toplevel
    from recnet_jax import inference  # pylint: disable=import-outside-toplevel

    model = RECNet(norm_variant=spec["norm_variant"], conv_impl=spec["conv_impl"], rngs=nnx.Rngs(0))
    x = jnp.asarray(synthetic_pair(spec["batch"], spec["h"], spec["w"])[0])
    # The package's inference path (what enhance and evaluate run): one program below
    # inference.LEAN_MIN_PIXELS per image, the staged memory-lean one from there on.
    lean = spec["h"] * spec["w"] >= inference.LEAN_MIN_PIXELS
    if lean:   # several jitted stages: compiled in the first (warm-up) call, no AOT compile time
        fn, args, compile_s = (lambda x_: inference.predict_lean(model, x_)), (x,), None
    else:
        graphdef, state = nnx.split(model)
        fn, compile_s = aot_compile(inference.model_apply(graphdef), state, x)
        args = (state, x)
    timing = time_calls(fn, *args, repeats=spec["repeats"], warmup=spec["warmup"])
    return _infer_record("jax", spec, timing, compile_s, path="lean" if lean else "single",
                         threads={"xla_cpu_devices": jax.local_device_count()})


def _torch_infer(spec: dict) -> dict:
    import torch  # pylint: disable=import-outside-toplevel

    from recnet_jax import torch_twin  # pylint: disable=import-outside-toplevel

    torch.manual_seed(0)
    net = torch_twin.RECNetTorch(norm_variant=spec["norm_variant"]).eval()
    x = torch.from_numpy(synthetic_pair(spec["batch"], spec["h"], spec["w"])[0].transpose(0, 3, 1, 2).copy())

    def infer(x):
        with torch.inference_mode():
            return net(x).image

    timing = time_calls(infer, x, repeats=spec["repeats"], warmup=spec["warmup"], sync=None)
    return _infer_record("torch", spec, timing, None, threads=_torch_threads())


def _infer_record(framework, spec, timing, compile_s, **extra) -> dict:
    mpix = spec["batch"] * spec["h"] * spec["w"] / 1e6
    return make_record(framework, "infer", spec["batch"], spec["h"], spec["w"], timing, compile_s,
                       mpix_per_s=round(mpix / timing["median_s"], 4),
                       norm_variant=spec["norm_variant"],
                       conv_impl=spec["conv_impl"] if framework == "jax" else None, **extra)


def _torch_threads() -> dict:
    import torch  # pylint: disable=import-outside-toplevel
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def _train_config(spec: dict):
    """configs/default.py with the bench's batch, model variant and a random VGG (no weights file)."""
    try:
        from configs import default  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise RuntimeError("the JAX training benchmark reads configs/default.py: run it from the "
                           "repository root (or put the repository on PYTHONPATH)") from e
    config = default.get_config()
    config.batch_size = spec["batch"]
    config.model.norm_variant = spec["norm_variant"]
    config.model.conv_impl = spec["conv_impl"]
    config.loss.vgg_weights = ""
    config.loss.vgg_random_init = True   # the same cost as ImageNet weights
    return config


def _jax_train(spec: dict) -> dict:
    try:
        from recnet_jax import train_step  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise RuntimeError("the JAX training step benchmark needs recnet_jax.train_step "
                           f"(create_train_state, make_train_step), which does not import here: {e}"
                           ) from e
    from recnet_jax import losses, sharding  # pylint: disable=import-outside-toplevel

    config = _train_config(spec)
    mesh = sharding.make_mesh()
    with jax.set_mesh(mesh):   # harmless for an Auto mesh, needed for an Explicit one (stack_notes §4.1)
        return _jax_train_under_mesh(spec, config, mesh, train_step, losses, sharding)


def _jax_train_under_mesh(spec, config, mesh, train_step, losses, sharding) -> dict:
    state, graphdef = train_step.create_train_state(config, mesh)
    vgg = losses.vgg_from_config(config.loss)
    step_fn = train_step.make_train_step(config, graphdef, mesh)
    lq, gt = synthetic_pair(spec["batch"], spec["h"], spec["w"])
    batch = sharding.shard_batch({"input": lq, "target": gt}, mesh)
    rng = jax.device_put(np.asarray(state.rng), sharding.replicated(mesh))  # as train.py does
    compile_s = None
    if hasattr(step_fn, "lower"):
        step_fn, compile_s = aot_compile(step_fn, state, batch, rng, vgg)
    holder = {"state": state}

    def step():
        holder["state"], metrics = step_fn(holder["state"], batch, rng, vgg)   # the state is donated
        return holder["state"], metrics

    timing = time_calls(step, repeats=spec["repeats"], warmup=spec["warmup"])
    return make_record("jax", "train", spec["batch"], spec["h"], spec["w"], timing, compile_s,
                       norm_variant=spec["norm_variant"], conv_impl=spec["conv_impl"],
                       compile_in_first_call=compile_s is None,
                       threads={"xla_cpu_devices": jax.local_device_count()})


def _torch_train(spec: dict) -> dict:
    import torch  # pylint: disable=import-outside-toplevel

    from recnet_jax import torch_twin  # pylint: disable=import-outside-toplevel

    torch.manual_seed(0)
    net = torch_twin.RECNetTorch(norm_variant=spec["norm_variant"]).train()
    step = torch_twin.make_train_step(net, torch_twin.vgg16_features(seed=0))
    lq, gt = (torch.from_numpy(a.transpose(0, 3, 1, 2).copy())
              for a in synthetic_pair(spec["batch"], spec["h"], spec["w"]))
    timing = time_calls(step, lq, gt, repeats=spec["repeats"], warmup=spec["warmup"], sync=None)
    return make_record("torch", "train", spec["batch"], spec["h"], spec["w"], timing, None,
                       norm_variant=spec["norm_variant"], conv_impl=None, threads=_torch_threads())


_MODEL_RUNNERS = {("jax", "infer"): _jax_infer, ("torch", "infer"): _torch_infer,
                  ("jax", "train"): _jax_train, ("torch", "train"): _torch_train}


def model_specs(args) -> list[dict]:
    """One spec per (framework, configuration) of the model suite."""
    frameworks = ["jax"] + (["torch"] if args.torch else [])
    common = dict(suite="model", repeats=args.repeats, warmup=args.warmup,
                  norm_variant=args.norm_variant, conv_impl=args.conv_impl)
    specs = [dict(common, framework=fw, kind="infer", batch=1, h=s, w=s)
             for s in _sizes(args.sizes or "512") for fw in frameworks]
    if args.train:
        specs += [dict(common, framework=fw, kind="train", batch=args.train_batch,
                       h=args.train_size, w=args.train_size) for fw in frameworks]
    return specs


def comparisons(records: Sequence[dict]) -> list[dict]:
    """torch / jax time and memory ratios for every configuration measured in both frameworks."""
    by_key = {(r["framework"], r["kind"], r["batch"], r["h"], r["w"]): r for r in records}
    out = []
    for (fw, kind, b, h, w), r in by_key.items():
        t = by_key.get(("torch", kind, b, h, w))
        if fw != "jax" or t is None:
            continue
        out.append({"kind": kind, "batch": b, "h": h, "w": w,
                    "speedup_jax_vs_torch": round(t["median_s"] / r["median_s"], 3),
                    "peak_rss_jax_over_torch": round(r["peak_rss_mb"] / t["peak_rss_mb"], 3),
                    "calls_extra_rss_jax_over_torch": (
                        round(r["calls_extra_rss_mb"] / t["calls_extra_rss_mb"], 3)
                        if r.get("calls_extra_rss_mb") and t.get("calls_extra_rss_mb") else None)})
    return out


# --------------------------------------------------------------------------- running and reporting

def run_one(spec: dict) -> dict:
    """Measures one configuration in this process and returns its record."""
    if not spec.get("compile_cache", False):
        jax.config.update("jax_enable_compilation_cache", False)
    suite = spec["suite"]
    if suite == "model":
        return _MODEL_RUNNERS[(spec["framework"], spec["kind"])](spec)
    if suite == "losses":   # imported here: each suite's dependencies stay out of the others' RSS
        from recnet_jax.losses import bench as losses_bench  # pylint: disable=import-outside-toplevel
        return losses_bench.measure(spec)
    if suite == "data":
        from recnet_jax.data import bench as data_bench  # pylint: disable=import-outside-toplevel
        return data_bench.measure(spec)
    if suite == "enhance":
        from recnet_jax import enhance_bench  # pylint: disable=import-outside-toplevel
        return enhance_bench.measure(spec)
    raise ValueError(f"unknown suite {suite!r}; expected one of {SUITES}")


def run_in_subprocess(spec: dict, timeout_s: float | None = None) -> dict:
    """Runs ``python -m recnet_jax.bench --one SPEC`` and returns its record.

    Raises:
      RuntimeError with the child's stderr tail when it fails or prints no result line.
    """
    env = runtime.huge_pages_env()   # both frameworks alike, as the commands run
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-m", "recnet_jax.bench", "--one", json.dumps(spec)],
                          capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child {spec} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def format_table(records: Sequence[dict], extra: Sequence[str] = ()) -> str:
    """A plain-text table of records (the common fields plus ``extra`` columns)."""
    cols = ["framework", "kind", "batch", "h", "w", "median_s", "min_s", "compile_s", "peak_rss_mb",
            "calls_extra_rss_mb", *extra]
    cell = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    rows = [cols] + [[cell(r.get(c)) for c in cols] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(v.rjust(wd) for v, wd in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def write_report(path: str | os.PathLike, suite: str, records: list[dict], **extra) -> dict:
    """The common report: {suite, environment, results: [records], **extra}; returns it."""
    report = {"benchmark": "recnet_jax.bench", "suite": suite, "environment": environment(),
              "record_fields": list(RECORD_FIELDS), "results": records, **extra}
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def _sizes(text: str) -> list[int]:
    sizes = [int(s) for s in str(text).split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--sizes must be a comma list of positive sizes, got {text!r}")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m recnet_jax.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="model", choices=SUITES)
    p.add_argument("--out", help="JSON report path (required unless --one)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per configuration (>= 5)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up calls before the timed ones")
    p.add_argument("--conv_impl", default="auto", choices=("auto", "fast", "lax"))
    p.add_argument("--compile_cache", action="store_true",
                   help="let the children use the persistent compilation cache (compile_s then "
                        "measures a cache hit)")
    p.add_argument("--timeout_s", type=float, default=None, help="per-configuration time limit")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one JSON spec
    g = p.add_argument_group("model suite")
    g.add_argument("--sizes", default=None,
                   help="comma list: model suite, square inference sizes (default 512); enhance "
                        "suite, photo sizes WxH or N (default 1632x1224,2048x2048,4000x3000)")
    g.add_argument("--train", action="store_true", help="also time the training step")
    g.add_argument("--torch", action="store_true", help="also time the PyTorch twin")
    g.add_argument("--norm_variant", default="official", choices=("official", "paper"))
    g = p.add_argument_group("model --train, losses and data suites")
    g.add_argument("--train_batch", type=int, default=8)
    g.add_argument("--train_size", type=int, default=256)
    g = p.add_argument_group("losses suite")
    g.add_argument("--only", default="", help="comma-separated subset of the timed functions")
    g.add_argument("--vgg_precision", default="HIGHEST", choices=("HIGHEST", "HIGH", "DEFAULT", "global"),
                   help="VGG conv precision; 'global' follows jax_default_matmul_precision")
    g = p.add_argument_group("data suite")
    g.add_argument("--data_dir", default=None, help="synthetic dataset folder (built if missing)")
    g.add_argument("--batches", type=int, default=20, help="batches per timed trial")
    g.add_argument("--modes", default="threads,processes", help="comma list: threads, processes")
    g = p.add_argument_group("enhance suite (and --sizes)")
    g.add_argument("--lean", default="auto",
                   help="comma list of inference paths: auto (by size), on (staged), off (one program)")
    g.add_argument("--checkpoint", default="", help="weights to load (default: random init)")
    args = p.parse_args(argv)
    if args.one is None and not args.out:
        p.error("--out is required")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one is not None:
        record = run_one(json.loads(args.one))
        print(RESULT_PREFIX + json.dumps(record), flush=True)
        return 0
    if args.repeats < 5:
        logging.warning("--repeats %d: the reported medians need at least 5 timed runs", args.repeats)
    extra_cols: tuple[str, ...] = ()
    summary: dict[str, Any] = {}
    if args.suite == "model":
        specs = model_specs(args)
        extra_cols = ("mpix_per_s",)
    elif args.suite == "losses":
        from recnet_jax.losses import bench as losses_bench  # pylint: disable=import-outside-toplevel
        specs = losses_bench.specs(args)
    elif args.suite == "data":
        from recnet_jax.data import bench as data_bench  # pylint: disable=import-outside-toplevel
        specs, summary = data_bench.specs(args)
        extra_cols = ("workers", "crops_per_s")
    else:
        from recnet_jax import enhance_bench  # pylint: disable=import-outside-toplevel
        specs = enhance_bench.specs(args)
        extra_cols = ("lean", "first_call_s", "mpix_per_s", "peak_rss_bytes_per_pixel")
    records, errors = [], []
    for spec in specs:
        spec["compile_cache"] = args.compile_cache
        logging.info("running %s", spec)
        try:
            records.append(run_in_subprocess(spec, args.timeout_s))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            logging.error("%s", e)
            errors.append({"spec": spec, "error": str(e)[-2000:]})
    if args.suite == "model":
        summary["comparisons"] = comparisons(records)
    elif args.suite == "losses":
        summary.update(losses_bench.summary(records))
    elif args.suite == "enhance":
        summary.update(enhance_bench.summary(records))
    report = write_report(args.out, args.suite, records, errors=errors,
                          args={k: v for k, v in vars(args).items() if k != "one"}, **summary)
    print(format_table(records, extra_cols))
    machine = report["environment"]["machine"]
    print(f"machine: {machine['cpu']}, {machine['cpus_usable']} cores, "
          f"{' '.join(machine['cpu_flags']) or 'no AVX2'}")
    for c in summary.get("comparisons", []):
        print(f"{c['kind']} {c['batch']}x{c['h']}x{c['w']}: jax {c['speedup_jax_vs_torch']}x faster "
              f"than torch; peak RSS jax/torch {c['peak_rss_jax_over_torch']} (process), "
              f"{c['calls_extra_rss_jax_over_torch']} (memory the calls add)")
    for k in ("shares",):
        if k in summary:
            print(json.dumps({k: summary[k]}))
    print(f"-> {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
