"""Multi-host training, for real: ``launch/local_multiprocess.sh`` runs 2 JAX processes x 2 fake CPU
devices on localhost (jax.distributed, gloo collectives) and the tests compare them with a
1-process 4-device run; plus the data shards, a cross-process-count resume, a killed process and
the TPU / SLURM launch command lines.

Runs share the tiny synthetic dataset of ``test_train`` (64 x 64 photos, 32 x 32 crops, a
one-block RECNet, the default objective) and the persistent compilation cache in ``.cache/jax``.
The two runs see the same global batches because both read the data as 2 shards
(``config.data.num_shards=2``): the sequence of global batches is then a function of the seed and
the shard count only, not of the process count (``recnet_jax.data.pipeline``).
"""

import os
import pathlib
import re
import select
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from recnet_jax.data import pipeline
from test_train import data_dir, exported_params  # noqa: F401  (data_dir: the module fixture)

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "local_multiprocess.sh"
FLAGS = ("--config", "configs/demo.py", "--config.model.num_blocks=1", "--config.data.crop_size=32",
         "--config.batch_size=4", "--config.data.num_shards=2", "--config.num_train_steps=3",
         "--config.checkpoint_every_steps=2", "--config.log_every_steps=1",
         "--config.eval_every_steps=1000", "--config.data.num_threads=1",
         "--config.num_eval_images=1",
         # piecewise: the compiled step does not depend on num_train_steps (the kill test's
         # longer run reuses the compiled step)
         "--config.optim.schedule=piecewise")

# Runs recnet_jax.main; each process also writes every local copy of the final parameters to
# WORKDIR/params.process<i>.npz (test-side instrumentation, as in test_train's FAULT_RUNNER).
RUNNER = """
import jax, numpy as np
from absl import app
from flax import nnx
from recnet_jax import main, train
export = train.export_model
def export_and_dump(graphdef, params, workdir):
    out = {}
    for path, leaf in nnx.to_flat_state(params):
        for j, shard in enumerate(leaf[...].addressable_shards):
            out["/".join(map(str, path)) + f"@{j}"] = np.asarray(shard.data)
    np.savez(f"{workdir}/params.process{jax.process_index()}.npz", **out)
    return export(graphdef, params, workdir)
train.export_model = export_and_dump
app.run(main.main)
"""
TIMEOUT = 900


def _env(tmp: pathlib.Path, heartbeat: int = 20) -> dict:
    runner = tmp / "runner.py"
    runner.write_text(RUNNER)
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
    return dict(os.environ, RECNET_MAIN=str(runner), HEARTBEAT_TIMEOUT_S=str(heartbeat),
                JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                PYTHONPATH=str(REPO))


def _popen(n: int, devices: int, workdir, data, *flags, env) -> subprocess.Popen:
    cmd = ["bash", str(LAUNCH), str(n), f"--devices_per_process={devices}", *FLAGS,
           "--workdir", str(workdir), f"--config.data.data_dir={data}", *flags]
    # Its own session, so that cleanup reaches every process of the run (no orphans).
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def launch(n: int, devices: int, workdir, data, *flags, env, check=True) -> str:
    proc = _popen(n, devices, workdir, data, *flags, env=env)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        _stop(proc)
    if check and proc.returncode != 0:
        raise AssertionError(f"launch {n} x {devices} exited {proc.returncode}:\n{excerpt(out)}")
    return out


def excerpt(out: str, tail: int = 3000) -> str:
    """A failed launch's output for the assertion message: the first error lines of each process
    (absl's E/F lines and exceptions; the cause is there, not in the stack traces after it) and
    the last ``tail`` characters."""
    first = [line for line in out.splitlines()
             if re.match(r"\[\d+\] ([EF]\d{4} |\w+(Error|Exception)\b)", line)][:8]
    return "first errors:\n" + "\n".join(first) + f"\n... last {tail} characters:\n" + out[-tail:]


def process_params(workdir, i: int) -> dict[str, np.ndarray]:
    with np.load(pathlib.Path(workdir) / f"params.process{i}.npz") as f:
        return dict(f)


@pytest.fixture(scope="module")
def two_processes(data_dir, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("two_processes")
    start = time.perf_counter()
    out = launch(2, 2, tmp / "run", data_dir, env=_env(tmp))
    return tmp / "run", out, time.perf_counter() - start


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("one_process")
    out = launch(1, 4, tmp / "run", data_dir, env=_env(tmp))
    return tmp / "run", out


# ---- in-process: the data shards ------------------------------------------------------------

def test_fixed_shards_give_the_same_global_batches_on_any_host_count(data_dir):  # noqa: F811
    one = pipeline.train_dataset("synthetic", str(data_dir), batch_size=4, crop_size=32,
                                 process_index=0, process_count=1, num_shards=2)
    hosts = [pipeline.train_dataset("synthetic", str(data_dir), batch_size=2, crop_size=32,
                                    process_index=p, process_count=2) for p in range(2)]
    for step in range(5):  # 8 examples, 4 per shard: crosses epochs
        for key in ("input", "target", "name"):
            np.testing.assert_array_equal(
                one[step][key], np.concatenate([hosts[0][step][key], hosts[1][step][key]]))
    # The shards are disjoint halves, with their own order and augmentation.
    names = [{str(n) for s in range(2) for n in h[s]["name"]} for h in hosts]
    assert names[0].isdisjoint(names[1]) and len(names[0]) == len(names[1]) == 4
    assert not np.array_equal(hosts[0][0]["input"], hosts[1][0]["input"])
    with pytest.raises(ValueError, match="config.data.num_shards=3 must be a multiple"):
        pipeline.train_dataset("synthetic", str(data_dir), batch_size=2, process_index=0,
                               process_count=2, num_shards=3)


# ---- 2 processes on localhost ---------------------------------------------------------------

def test_two_processes_agree_and_match_one_process(two_processes, one_process):
    workdir, out, seconds = two_processes
    print(f"2 x 2 run: {seconds:.0f} s")
    assert "JAX process 0 of 2; 2 local / 4 global devices" in out
    assert "JAX process 1 of 2; 2 local / 4 global devices" in out
    assert "coordinator 127.0.0.1:" in out
    for i in range(2):
        assert re.search(rf"^\[{i}\] .*done: 3 steps", out, re.M), out[-3000:]
    # Every local copy on both processes holds the same parameters, bit for bit.
    dumps = [process_params(workdir, i) for i in range(2)]
    assert dumps[0].keys() == dumps[1].keys()
    names = {k.rsplit("@", 1)[0] for k in dumps[0]}
    for name in names:
        copies = [d[f"{name}@{j}"] for d in dumps for j in range(2)]
        assert all(np.array_equal(copies[0], c) for c in copies[1:]), name
    # ... and they are what was exported (once, by the run as a whole).
    exported = exported_params(workdir)
    assert exported.keys() == names
    for name in names:
        np.testing.assert_array_equal(exported[name], dumps[0][f"{name}@0"])
    # The 1-process 4-device run on the same global batches gives the same parameters.
    single = exported_params(one_process[0])
    assert "JAX process 0 of 1; 4 local / 4 global devices" in one_process[1]
    diff = max(float(np.abs(single[k] - exported[k]).max()) for k in names)
    print(f"max |2 processes - 1 process| = {diff:.3g}")
    assert diff <= 1e-5
    # Only process 0 writes TensorBoard events and the results; both wrote their iterator state.
    assert len([f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]) == 1
    assert (workdir / "eval_results.json").exists()
    saved = sorted(f for f in os.listdir(workdir / "checkpoints" / "3" / "data")
                   if f.startswith("process_"))
    assert saved == ["process_0-of-2.json", "process_1-of-2.json"]
    # The validation ran over both hosts (each its shard) and gathered all images.
    assert re.search(r"^\[1\] .*final validation all: [\d.]+ dB / [\d.]+ \(n=2\)", out, re.M)


def test_checkpoint_of_two_processes_resumes_in_one_process(two_processes, data_dir, tmp_path):  # noqa: F811
    workdir = two_processes[0]
    resumed = tmp_path / "run"
    shutil.copytree(workdir / "checkpoints" / "2", resumed / "checkpoints" / "2")
    out = launch(1, 4, resumed, data_dir, env=_env(tmp_path))
    assert "resumed from" in out and "at step 2" in out
    assert "written by another number of processes" in out
    a, b = exported_params(resumed), exported_params(workdir)
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    print(f"max |resumed on 1 process - 2 processes| = {diff:.3g}")
    assert diff <= 1e-5


def test_killed_process_ends_the_other_fast_naming_it(two_processes, data_dir, tmp_path):  # noqa: F811
    heartbeat = 10
    proc = _popen(2, 2, tmp_path / "run", data_dir, "--config.num_train_steps=100000",
                  env=_env(tmp_path, heartbeat=heartbeat))
    lines, pids = [], {}
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # until both processes train
            ready, _, _ = select.select([proc.stdout], [], [], 5)
            if not ready:
                continue
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if m := re.match(r"launch: process (\d): pid (\d+)", line):
                pids[int(m[1])] = int(m[2])
            if line.startswith("[1] ") and "train/total=" in line:
                break
        assert len(pids) == 2 and lines[-1].startswith("[1] "), excerpt("".join(lines))
        os.kill(pids[1], signal.SIGKILL)
        killed = time.monotonic()
        out, _ = proc.communicate(timeout=heartbeat + 110)
        seconds = time.monotonic() - killed
    finally:
        _stop(proc)
    out = "".join(lines) + out
    print(f"process 0 ended {seconds:.1f} s after process 1 was killed")
    assert "launch: process 1 (pid %d) was killed by signal KILL" % pids[1] in out
    status = re.search(r"launch: process 0 \(pid \d+\) (exited with status (\d+)|was killed by signal (\w+))", out)
    assert status, excerpt(out)
    assert proc.returncode != 0 and status[1] != "finished"
    # The message names the lost process: ours, or the JAX runtime's own (whichever comes first).
    own = re.search(r"^\[0\] .*process 0 of 2 exits: lost process 1 \(no heartbeat\)", out, re.M)
    jax_runtime = re.search(r"stopped sending heartbeats\):\s*(\[0\] )?1\b|Task 1 heartbeat timeout", out)
    assert own or jax_runtime, excerpt(out)
    assert seconds < heartbeat + 60


# A process that reaches the first collective long after the other: gloo gives a communicator's
# first collective only 30 s to gather every process (runtime._connect_cpu_collectives).
LATE_RUNNER = """
import sys, time
import jax, numpy as np
from recnet_jax import runtime, sharding
runtime.initialize_distributed()
mesh = sharding.make_mesh()
x = jax.make_array_from_process_local_data(sharding.data_sharded(mesh), np.ones(2, np.float32))
if jax.process_index() == 1:
    time.sleep(float(sys.argv[1]))
print("sum", float(jax.jit(lambda v: v.sum(), out_shardings=sharding.replicated(mesh))(x)))
"""


def test_a_process_may_reach_the_first_collective_after_gloos_30_s(tmp_path):
    runner = tmp_path / "late.py"
    runner.write_text(LATE_RUNNER)
    env = dict(_env(tmp_path), RECNET_MAIN=str(runner))
    start = time.monotonic()
    proc = subprocess.run(["bash", str(LAUNCH), "2", "--devices_per_process=2", "35"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, excerpt(proc.stdout + proc.stderr)
    assert time.monotonic() - start > 35
    assert proc.stdout.count("sum 4.0") == 2, proc.stdout


# ---- the cluster launch scripts (command lines only) -----------------------------------------

def test_tpu_pod_dry_run_prints_create_install_and_train_on_all_workers():
    env = dict(os.environ, PROJECT="my-project", TPU_NAME="pod", ZONE="us-west4-a")
    proc = subprocess.run(["bash", "launch/tpu_pod.sh", "--dry_run", "--config", "configs/default.py",
                           "--workdir", "gs://bucket/runs/msec", "--config.batch_size=32"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    create, pack, copy, install, train = proc.stdout.strip().splitlines()
    assert create.startswith("gcloud compute tpus tpu-vm describe pod --zone=us-west4-a "
                             "--project=my-project")
    assert "|| gcloud compute tpus tpu-vm create pod" in create
    assert "--accelerator-type=v5litepod-32" in create and "--version=v2-alpha-tpuv5-lite" in create
    assert pack.startswith("tar ") and "--exclude=.venv" in pack
    assert copy.startswith("gcloud compute tpus tpu-vm scp") and "--worker=all" in copy
    assert "--worker=all" in install and "jax[tpu]==0.10.2" in install
    assert "requirements.txt" in install
    assert train.startswith("gcloud compute tpus tpu-vm ssh pod --worker=all")
    assert ("RECNET_DISTRIBUTED=1 RECNET_HEARTBEAT_TIMEOUT_S=100 .venv/bin/python -u -m "
            "recnet_jax.main --config configs/default.py --workdir gs://bucket/runs/msec "
            "--config.batch_size=32 --config.data.data_dir=data_dir") in train
    # A workdir only one worker can see is refused, naming the fix.
    proc = subprocess.run(["bash", "launch/tpu_pod.sh", "--dry_run", "--config", "configs/default.py",
                           "--workdir", "runs/x"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "must be shared by all workers" in proc.stderr


def test_slurm_script_runs_one_process_per_gpu_with_the_flags():
    script = (REPO / "launch" / "gpu_slurm.sbatch").read_text()
    for directive in ("--nodes=2", "--ntasks-per-node=8", "--gres=gpu:8"):
        assert f"#SBATCH {directive}" in script
    proc = subprocess.run(["bash", "launch/gpu_slurm.sbatch", "--dry_run", "--config",
                           "configs/default.py", "--workdir", "/shared/runs/msec",
                           "--config.batch_size=16"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "srun", "--kill-on-bad-exit=1", "--label", ".venv/bin/python", "-m", "recnet_jax.main",
        "--config", "configs/default.py", "--workdir", "/shared/runs/msec", "--config.batch_size=16"]


def test_launcher_usage_and_bad_device_count_are_clear():
    proc = subprocess.run(["bash", str(LAUNCH)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "local_multiprocess.sh N" in proc.stderr
    proc = subprocess.run(["bash", str(LAUNCH), "2", "--devices_per_process=0"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "positive integer" in proc.stderr
