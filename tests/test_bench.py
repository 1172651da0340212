"""The benchmark entry point (recnet_jax.bench): the one timer, the record format, and the command
at a tiny size for JAX and the PyTorch twin (each configuration in its own process)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from recnet_jax import bench

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_time_calls_counts_warmup_and_repeats():
    calls = []
    timing = bench.time_calls(lambda x: calls.append(x) or x, 3, repeats=4, warmup=2, sync=None)
    assert calls == [3] * 6
    assert len(timing["times_s"]) == 4 and timing["first_call_s"] >= 0
    assert timing["min_s"] <= timing["median_s"]
    assert timing["base_rss_mb"] > 0
    record = bench.make_record("jax", "infer", 1, 8, 8, timing, 0.5)
    assert set(bench.RECORD_FIELDS) <= set(record)
    assert "median_s" in bench.format_table([record])


def _run(tmp_path, *args):
    out = tmp_path / "bench.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    proc = subprocess.run([sys.executable, "-m", "recnet_jax.bench", *args, "--repeats", "2",
                           "--compile_cache", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def _check_records(records):
    for r in records:
        assert isinstance(r["framework"], str) and isinstance(r["kind"], str)
        for key in ("batch", "h", "w"):
            assert isinstance(r[key], int) and r[key] > 0, (key, r)
        for key in ("median_s", "peak_rss_mb"):
            assert isinstance(r[key], float) and r[key] > 0, (key, r)
        assert r["compile_s"] is None or isinstance(r["compile_s"], float)
        assert len(r["times_s"]) == 2


def test_model_suite_jax_and_torch(tmp_path):
    pytest.importorskip("torch")
    report, stdout = _run(tmp_path, "--sizes", "32", "--torch")
    assert report["suite"] == "model" and not report["errors"]
    records = report["results"]
    _check_records(records)
    assert [(r["framework"], r["kind"], r["batch"], r["h"], r["w"]) for r in records] == [
        ("jax", "infer", 1, 32, 32), ("torch", "infer", 1, 32, 32)]
    jax_rec, torch_rec = records
    assert isinstance(jax_rec["compile_s"], float) and torch_rec["compile_s"] is None
    assert jax_rec["mpix_per_s"] > 0 and torch_rec["threads"]["intra_op"] >= 1
    (cmp,) = report["comparisons"]
    assert cmp["kind"] == "infer" and cmp["speedup_jax_vs_torch"] > 0
    env = report["environment"]
    assert env["versions"]["jax"] and env["versions"]["torch"] and env["machine"]["cpu_count"]
    assert set(env["machine"]["cpu_flags"]) <= set(bench.CPU_FLAGS)
    assert f"machine: {env['machine']['cpu']}, " in stdout   # with its vector extensions
    assert "median_s" in stdout and "jax" in stdout and "torch" in stdout


def test_losses_suite_one_function(tmp_path):
    report, _ = _run(tmp_path, "--suite", "losses", "--only", "model_fwd", "--train_batch", "1",
                     "--train_size", "32")
    assert report["suite"] == "losses" and not report["errors"]
    (record,) = report["results"]
    _check_records([record])
    assert (record["framework"], record["kind"]) == ("jax", "model_fwd")
    assert "definitions" in report


def test_enhance_suite_one_size(tmp_path):
    report, stdout = _run(tmp_path, "--suite", "enhance", "--sizes", "64x48", "--lean", "auto")
    assert report["suite"] == "enhance" and not report["errors"]
    (record,) = report["results"]
    _check_records([record])
    assert (record["framework"], record["kind"], record["batch"], record["h"], record["w"]) == (
        "jax", "enhance", 1, 48, 64)
    assert record["compile_s"] is None and record["first_call_s"] > 0
    assert record["lean"] is False and record["lean_mode"] == "auto"   # 64x48 < LEAN_MIN_PIXELS
    assert record["output_shape"] == [48, 64, 3]
    assert record["peak_rss_bytes_per_pixel"] > 0 and record["mpix_per_s"] > 0
    assert report["lean_min_pixels"] > 0 and "enhance" in stdout


def test_the_training_step_module_does_not_load_tensorflow():
    """The bench's JAX training process imports recnet_jax.train_step only: the trainer's loop
    (clu's TensorBoard writers) would add TensorFlow, about 450 MB, to its peak memory."""
    code = ("import sys; from recnet_jax import bench, train_step; "
            "print(sorted(m for m in ('tensorflow', 'clu.metric_writers', 'optax', 'flax.nnx') "
            "if m in sys.modules))")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout
    assert out.strip().splitlines()[-1] == "['flax.nnx', 'optax']"
