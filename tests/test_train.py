"""The trainer: sharded steps on 8 vs 1 devices, exact resume after SIGKILL and after SIGTERM, the
NaN stop, a restore onto another device count, bad input, and the paper variant training without
NaN.

Runs of ``python -m recnet_jax.main`` are real subprocesses on a tiny synthetic dataset built with
the real TFDS builder (64 x 64 photos, 32 x 32 crops, a one-block RECNet), sharing the persistent
compilation cache, so that their compiles are paid once.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs import demo as demo_config
from recnet_jax import checkpointing, demo, losses, sharding, train, train_step
from recnet_jax.data import build, pipeline, synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_FLAGS = ("--config.model.num_blocks=1", "--config.data.crop_size=32", "--config.batch_size=2",
              "--config.num_train_steps=4", "--config.checkpoint_every_steps=2",
              "--config.log_every_steps=2", "--config.eval_every_steps=1000",
              "--config.data.num_threads=1", "--config.num_eval_images=1",
              "--config.optim.warmup_steps=1")

# Runs main in this interpreter after arranging a real SIGKILL / SIGTERM of itself at a given step
# (test-side fault injection; the trainer has no hook for it).
FAULT_RUNNER = """
import os, signal, sys
from absl import app
from recnet_jax import checkpointing, main, train_step
mode, at = sys.argv.pop(1), int(sys.argv.pop(1))
if mode == "kill":  # SIGKILL as soon as the checkpoint of step `at` is complete on disk
    save = checkpointing.TrainCheckpointer.save
    def save_then_die(self, step, *args, **kwargs):
        saved = save(self, step, *args, **kwargs)
        if step == at and saved:
            self.wait()
            os.kill(os.getpid(), signal.SIGKILL)
        return saved
    checkpointing.TrainCheckpointer.save = save_then_die
else:  # SIGTERM (preemption) right after step `at` ran
    step_fn = train_step.make_train_step
    def make(config, graphdef, mesh):
        fn = step_fn(config, graphdef, mesh)
        def wrapped(state, *args):
            out = fn(state, *args)
            if int(out[0].step) == at:
                os.kill(os.getpid(), signal.SIGTERM)
            return out
        return wrapped
    train_step.make_train_step = make
app.run(main.main)
"""


def _photo(name: str, size: int) -> np.ndarray:
    with Image.open(synthetic.bundled_photo_dir() / name) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A synthetic dataset of 64 x 64 photos: 2 train scenes x 4 variants, 1 test scene x 2."""
    root = tmp_path_factory.mktemp("train_data")
    for split, names in (("train", ("astronaut.png", "coffee.png")), ("test", ("chelsea.png",))):
        (root / "photos" / split).mkdir(parents=True)
        for n in names:
            Image.fromarray(_photo(n, 64)).save(root / "photos" / split / n)
    build.build_dataset("synthetic", root / "data", root / "photos", min_size=32,
                        variants={"train": 4, "test": 2})
    return root / "data"


def tiny_config(data_dir, **overrides) -> ml_collections.ConfigDict:
    config = demo_config.get_config()
    config.data.data_dir = str(data_dir)
    config.model.num_blocks = 1
    config.data.crop_size = 32
    config.data.num_threads = 1
    config.num_eval_images = 1
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return config


def run_main(workdir, data_dir, *flags, fault=None, check=True):
    cmd = [sys.executable]
    cmd += ["-c", FAULT_RUNNER, *fault] if fault else ["-m", "recnet_jax.main"]
    cmd += ["--config", str(REPO / "configs" / "demo.py"), "--workdir", str(workdir),
            f"--config.data.data_dir={data_dir}", *TINY_FLAGS, *flags]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def exported_params(workdir) -> dict:
    model = checkpointing.load_model(pathlib.Path(workdir) / "model")
    return {"/".join(map(str, k)): np.asarray(v) for k, v in
            nnx.to_flat_state(nnx.state(model, nnx.Param))}


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not differ, f"parameters differ: {differ[:5]}"


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run_full")
    proc = run_main(workdir, data_dir)
    return workdir, proc


def test_run_writes_checkpoints_metrics_and_the_export(uninterrupted):
    workdir, proc = uninterrupted
    results = json.loads((workdir / "eval_results.json").read_text())
    assert results["steps"] == 4 and results["num_images"] == 2
    assert 0 < results["groups"]["all"]["psnr"] < 60
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
    log = proc.stderr
    assert "steps/s" in log and "ETA" in log                  # clu ReportProgress
    assert "Total: 11,051" in log                             # parameter overview (one block)
    assert "train/total=" in log and "final validation" in log
    assert "Unable to initialize backend" not in log and "orbax" not in log.lower()


def test_the_export_is_the_debiased_moving_average(uninterrupted, data_dir):
    """configs/demo.py sets ema_decay: the export is ema / (1 - d^4) of the step-4 checkpoint, not
    its raw parameters."""
    workdir, _ = uninterrupted
    config = tiny_config(data_dir)
    decay = train_step.ema_decay(config)
    assert decay > 0
    mesh = sharding.make_mesh(jax.devices()[:1])
    target, _ = train_step.create_train_state(config, mesh)
    ckpt = checkpointing.TrainCheckpointer(str(workdir / "checkpoints"), every_steps=2, keep=2)
    it = pipeline.train_iterator("synthetic", str(data_dir), batch_size=2, crop_size=32, num_threads=1)
    state = ckpt.restore(4, checkpointing.abstract_like(target), it)
    ckpt.close()
    flat = lambda tree: {"/".join(map(str, k)): np.asarray(v)
                         for k, v in nnx.to_flat_state(nnx.State(tree))}
    raw, ema = flat(state.params), flat(train_step.eval_params(state, decay))
    exported = exported_params(workdir)
    assert exported.keys() == ema.keys()
    for k in ema:
        np.testing.assert_allclose(exported[k], ema[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert any(not np.allclose(raw[k], ema[k], atol=1e-6) for k in ema)


def test_resume_after_sigkill_then_sigterm_is_bit_exact(uninterrupted, data_dir, tmp_path):
    """SIGKILL after the checkpoint of step 2; the restart resumes there and gets SIGTERM after
    step 3 (it saves step 3 and exits cleanly); the next restart finishes at step 4 with the
    uninterrupted run's parameters, bit for bit."""
    killed = run_main(tmp_path, data_dir, fault=("kill", "2"), check=False)
    assert killed.returncode == -signal.SIGKILL
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    term = run_main(tmp_path, data_dir, fault=("term", "3"), check=False)
    assert term.returncode == 0, term.stderr[-3000:]
    assert "resumed from" in term.stderr and "at step 2" in term.stderr
    assert "preempted: checkpoint at step 3" in term.stderr
    assert "3" in os.listdir(tmp_path / "checkpoints") and not (tmp_path / "model").exists()
    resumed = run_main(tmp_path, data_dir)
    assert "at step 3" in resumed.stderr
    assert_bitwise_equal(exported_params(tmp_path), exported_params(uninterrupted[0]))


# In-process: these two stop before anything is built (a subprocess each would add about 8 s);
# main turns these errors into one line (test_missing_dataset_and_unknown_key_are_one_clear_line).

def test_a_finished_run_is_not_trained_again(uninterrupted, data_dir, caplog):
    workdir = uninterrupted[0]
    results = (workdir / "eval_results.json").read_text()
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
    with caplog.at_level("INFO"):
        again = train.train_and_evaluate(tiny_config(data_dir, num_train_steps=4, batch_size=8),
                                         str(workdir))
    assert "already holds the finished run" in caplog.text
    assert again == json.loads(results)
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before


def test_missing_dataset_and_unknown_key_are_one_clear_line(tmp_path):
    proc = run_main(tmp_path, tmp_path / "nothing", check=False)
    assert proc.returncode == 1
    assert "dataset 'synthetic' not found in" in proc.stderr
    assert "python -m recnet_jax.data.build --dataset synthetic" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_main(tmp_path, tmp_path, "--config.optim.learnig_rate=1", check=False)
    assert proc.returncode != 0 and "learnig_rate" in proc.stderr


def test_workdir_of_another_architecture_is_refused(uninterrupted, data_dir):
    workdir = uninterrupted[0]
    before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
    config = tiny_config(data_dir, num_train_steps=4, batch_size=8)   # 8 devices in-process
    config.model.nc = 4
    with pytest.raises(ValueError, match="holds a run of RECNet.*nothing was overwritten"):
        train.train_and_evaluate(config, str(workdir))
    assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before


def test_demo_report_on_a_trained_workdir(uninterrupted, data_dir):
    workdir = uninterrupted[0]
    config = tiny_config(data_dir)
    summary = demo.run(config, str(workdir))
    saved = json.loads((workdir / "results.json").read_text())
    assert saved == summary
    for key in ("input_psnr", "output_psnr", "input_ssim", "output_ssim"):
        assert 0 < saved[key] < 60
    assert saved["num_images"] == 2 and saved["steps"] == 4 and saved["train_seconds"] > 0
    assert saved["checkpoint"] == str(workdir / "model")
    with Image.open(workdir / "before_after.png") as im:   # 2 rows of input | output | target
        assert im.size == (3 * 64 + 2 * 4, 2 * 64 + 4)


# ---- in-process: 8 fake CPU devices (tests/conftest.py) ------------------------------------------

def _batch(data_dir, config):
    it = pipeline.train_iterator("synthetic", str(data_dir), batch_size=config.batch_size,
                                 crop_size=config.data.crop_size, seed=0, num_threads=1)
    return next(it)


def test_one_step_on_8_devices_equals_one_device(data_dir):
    assert jax.device_count() == 8
    config = tiny_config(data_dir, batch_size=8)
    vgg = losses.vgg_from_config(config.loss)
    host_batch = _batch(data_dir, config)
    params = {}
    for n in (8, 1):
        mesh = sharding.make_mesh(jax.devices()[:n])
        state, graphdef = train_step.create_train_state(config, mesh)
        step_fn = train_step.make_train_step(config, graphdef, mesh)
        state, metrics = step_fn(state, sharding.shard_batch(host_batch, mesh),
                                 np.asarray(state.rng), vgg)
        params[n] = nnx.to_pure_dict(state.params)
        assert params[n]["stem"]["kernel"].sharding.mesh.devices.size == n
        params[n] = jax.tree.map(np.asarray, params[n])
        assert np.isfinite(metrics["total"]) and metrics["ecr"] > 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0),
                 params[8], params[1])


def test_nan_stops_with_the_step_and_the_checkpoint_restores_on_one_device(data_dir, tmp_path):
    config = tiny_config(data_dir, batch_size=8, num_train_steps=50, checkpoint_every_steps=1,
                         log_every_steps=1)
    config.optim.learning_rate = 1e9       # diverges within a few steps
    config.optim.grad_clip = 0.0
    config.optim.schedule = "piecewise"
    config.loss.weights.ecr = 0.0          # (no VGG to compile; the ECR is reported as 0)
    with pytest.raises(train.NonFiniteLossError) as err:
        train.train_and_evaluate(config, str(tmp_path))
    message = str(err.value)
    step = int(message.split(":")[0].split()[-1])
    assert message.startswith(f"step {step}: the loss or its gradient is not finite (")
    assert "l1=" in message and "ecr=" in message and f"(step {step - 1})" in message
    ckpt = checkpointing.TrainCheckpointer(str(tmp_path / "checkpoints"), every_steps=1, keep=3)
    assert ckpt.latest_step() == step - 1     # the failed step was never saved
    # Saved from an 8-device mesh; restore onto one device.
    mesh = sharding.make_mesh(jax.devices()[:1])
    target, _ = train_step.create_train_state(config, mesh)
    it = pipeline.train_iterator("synthetic", str(data_dir), batch_size=8, crop_size=32,
                                 num_threads=1)
    restored = ckpt.restore(step - 1, checkpointing.abstract_like(target), it)
    ckpt.close()
    assert int(restored.step) == step - 1
    leaves = jax.tree.leaves(restored.params)
    assert all(leaf.sharding.mesh.devices.size == 1 for leaf in leaves)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves)


def test_paper_variant_trains_200_steps_at_lr_1e3_without_nan(data_dir):
    """The issue's reproduction (Adam lr 1e-3, L1 only): NaN at step 4 before the fix."""
    config = tiny_config(data_dir, batch_size=2, num_train_steps=200)
    config.model.num_blocks = 2            # the failure is per block; two keep the test short
    config.optim.schedule = "piecewise"
    config.optim.learning_rate = 1e-3
    config.optim.grad_clip = 0.0
    config.loss.weights = ml_collections.ConfigDict(dict(l1=1.0, ssim=0.0, mask=0.0, color=0.0,
                                                         ecr=0.0))
    assert config.model.norm_variant == "paper"
    mesh = sharding.make_mesh(jax.devices()[:1])
    state, graphdef = train_step.create_train_state(config, mesh)
    step_fn = train_step.make_train_step(config, graphdef, mesh)
    it = pipeline.train_iterator("synthetic", str(data_dir), batch_size=2, crop_size=32,
                                 num_threads=1)
    rng, totals = np.asarray(state.rng), []
    for _ in range(200):
        state, metrics = step_fn(state, sharding.shard_batch(next(it), mesh), rng, None)
        totals.append(float(metrics["total"]))
    assert np.isfinite(totals).all(), f"first non-finite loss at step {np.argmin(np.isfinite(totals)) + 1}"
    assert np.mean(totals[-20:]) < np.mean(totals[:20])
    # The failure mode is reached: the learned blur kernels have gone partly negative.
    kernels = [np.asarray(b["rdm"]["blur_kernel"][...])
               for b in nnx.to_pure_dict(state.params)["blocks"].values()]
    assert max(float((k < 0).mean()) for k in kernels) > 0.05
