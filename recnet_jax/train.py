"""Training: ``train_and_evaluate``, the loop around the step of :mod:`recnet_jax.train_step`.

    results = train_and_evaluate(config, workdir)           # the whole run (``recnet_jax.main``)

``train_and_evaluate`` resumes by itself from the latest complete checkpoint in
``WORKDIR/checkpoints`` (the same batches in the same order, the same parameters bit for bit),
otherwise starts from ``config.init_from`` or from scratch. It logs to TensorBoard in the workdir
(clu), validates every ``config.eval_every_steps`` and at the end with the paper's protocol
(:mod:`recnet_jax.evaluate`), stops on a non-finite loss without touching the last good
checkpoint, saves and exits cleanly on SIGTERM, and exports the final weights to
``WORKDIR/model/`` (:func:`recnet_jax.checkpointing.load_model` reads them).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from etils import epath
from flax import nnx

from recnet_jax import checkpointing, evaluate, losses, runtime, sharding, train_step
from recnet_jax.data import pipeline


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient became NaN or inf; the message names the step and the terms."""


# ---- the run ---------------------------------------------------------------------------------

class _Preemption:
    """Sets a flag on SIGTERM (main thread only); the loop saves and exits at the next step."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM: saving a checkpoint at the end of this step, then exiting")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


def _check_finite(step: int, metrics: dict, last_saved: int | None, ckpt_dir: str) -> None:
    if all(np.isfinite(metrics[k]) for k in ("total", "grad_norm")):
        return
    terms = ", ".join(f"{k}={float(v):.6g}" for k, v in metrics.items())
    where = (f"the last good checkpoint (step {last_saved}) in {ckpt_dir} is untouched"
             if last_saved is not None else "no checkpoint was written")
    raise NonFiniteLossError(
        f"step {step}: the loss or its gradient is not finite ({terms}); {where}. Lower "
        "config.optim.learning_rate or set config.optim.grad_clip, then rerun to resume.")


def _check_workdir(ckpt: checkpointing.TrainCheckpointer, step: int,
                   config: ml_collections.ConfigDict) -> dict:
    """The meta of checkpoint ``step``; raises ValueError if it is another architecture."""
    meta = ckpt.read_meta(step)
    wanted = train_step.architecture(config)
    if meta.get("architecture") != wanted:
        raise ValueError(
            f"{ckpt.directory} holds a run of RECNet{meta.get('architecture')}, but config.model "
            f"asks for RECNet{wanted}; nothing was overwritten. Use another --workdir, or the "
            "config that run was started with.")
    return meta


def _write_eval(writer, step: int, results: dict, prefix: str = "val") -> None:
    scalars = {}
    for group, r in results["groups"].items():
        scalars[f"{prefix}/{group}/psnr"] = r["psnr"]
        scalars[f"{prefix}/{group}/ssim"] = r["ssim"]
    writer.write_scalars(step, scalars)
    images = {}
    for i, s in enumerate(results.get("samples", [])):
        mask = np.repeat(s["mask"][..., None], 3, axis=-1)
        images[f"{prefix}/{i}_input_output_target_mask"] = np.concatenate(
            [s["input"], s["output"], s["target"], mask], axis=1)[None]
    if images:
        writer.write_images(step, images)


def _overall(results: dict) -> dict:
    return results["groups"]["all"]


def _train_iterator(config: ml_collections.ConfigDict, local_batch: int):
    """This process's training iterator; checks that the eval split is there too."""
    d = config.data
    try:
        it = pipeline.train_iterator(d.dataset, d.data_dir, batch_size=local_batch,
                                     crop_size=d.crop_size, seed=config.seed, split=d.train_split,
                                     num_threads=d.num_threads, num_shards=d.num_shards)
        pipeline.open_source(d.dataset, d.data_dir, d.eval_split)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"config.data.dataset={d.dataset!r} in config.data.data_dir="
                                f"{d.data_dir!r}: {e}") from None
    return it


def validate(config: ml_collections.ConfigDict, graphdef: nnx.GraphDef, params: nnx.State,
             mesh: jax.sharding.Mesh) -> dict:
    """:func:`recnet_jax.evaluate.evaluate_model` on ``config.data.eval_split``."""
    model = nnx.merge(graphdef, params)
    return evaluate.evaluate_model(model, config.data.dataset, config.data.data_dir,
                                   split=config.data.eval_split,
                                   num_samples=config.num_eval_images, mesh=mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
    """Trains ``config`` in ``workdir`` (resuming from it), validates and exports the model.

    Returns:
      the final validation results (:func:`recnet_jax.evaluate.evaluate_model`, without the
      sample images) with ``steps``, ``train_seconds`` (all runs of this workdir together),
      ``resumed_from`` and ``checkpoint`` (the model export), or None when the run stopped on
      SIGTERM (rerun to resume).
    Raises:
      ValueError / FileNotFoundError: a bad config, a missing dataset or VGG, a workdir of another
        architecture; nothing is written then.
      NonFiniteLossError: the loss became NaN or inf (the last checkpoint is kept as it was).
    """
    workdir = checkpointing.abspath(workdir)   # a gs:// URL stays as it is
    mesh = sharding.make_mesh()
    local_batch = sharding.check_batch_size(config.batch_size, mesh)
    for field in ("log_every_steps", "eval_every_steps", "num_train_steps"):
        if config[field] <= 0:
            raise ValueError(f"config.{field}={config[field]} must be positive")
    decay = train_step.ema_decay(config)
    vgg = losses.vgg_from_config(config.loss, seed=config.seed)   # fails before anything is built
    train_iter = _train_iterator(config, local_batch)

    ckpt = checkpointing.TrainCheckpointer(os.path.join(workdir, "checkpoints"),
                                           every_steps=config.checkpoint_every_steps,
                                           keep=config.keep_checkpoints)
    latest = ckpt.latest_step()
    meta = {"architecture": train_step.architecture(config), "batch_size": config.batch_size,
            "train_seconds": 0.0}
    if latest is not None:
        saved_meta = _check_workdir(ckpt, latest, config)
        meta["train_seconds"] = float(saved_meta.get("train_seconds", 0.0))
        config = ml_collections.ConfigDict(config.to_dict())
        config.init_from = ""  # the workdir's own checkpoint wins over init_from
        finished = _finished_results(workdir, latest, config)
        if finished is not None:
            ckpt.close()
            return finished
    state, graphdef = train_step.create_train_state(config, mesh)
    if latest is not None:
        state = ckpt.restore(latest, checkpointing.abstract_like(state), train_iter)
        logging.info("resumed from %s at step %d", ckpt.directory, latest)
    rng = jax.device_put(np.asarray(state.rng), sharding.replicated(mesh))  # state is donated

    is_main = jax.process_index() == 0
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
    start = step = int(state.step)
    if start == 0:
        parameter_overview.log_parameter_overview(
            nnx.to_pure_dict(state.params), msg="RECNet parameters", jax_logging_process=0)
        writer.write_hparams(_flat(config))
    step_fn = train_step.make_train_step(config, graphdef, mesh)
    report = periodic_actions.ReportProgress(num_train_steps=config.num_train_steps,
                                             writer=writer, every_steps=config.log_every_steps)
    last_saved, sums, count = latest, {}, 0
    t_start = time.perf_counter()

    def process(done: int, metrics: dict) -> None:
        """Host side of step ``done``: the finiteness check, the running means, the log."""
        nonlocal sums, count
        metrics = jax.device_get(metrics)
        _check_finite(done, metrics, last_saved, ckpt.directory)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        count += 1
        if is_main:
            report(done)
        if done % config.log_every_steps == 0 or done == config.num_train_steps:
            writer.write_scalars(done, {f"train/{k}": v / count for k, v in sums.items()})
            sums, count = {}, 0

    try:
        with metric_writers.ensure_flushes(writer), _Preemption() as preempt:
            pending = None  # step n's metrics are read while step n + 1 runs
            while step < config.num_train_steps:
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    batch = sharding.shard_batch(next(train_iter), mesh)
                    state, metrics = step_fn(state, batch, rng, vgg)
                step += 1
                if step == start + 1:
                    runtime.release_freed_memory()   # the compiler's freed heap (0.6 GB at 8 x 256^2)
                if pending is not None:
                    process(*pending)
                pending = (step, metrics)
                stop = preempt.requested or (jax.process_count() > 1
                                             and ckpt.reached_preemption(step))
                evaluate_now = step % config.eval_every_steps == 0 and step < config.num_train_steps
                if (stop or evaluate_now or step % config.checkpoint_every_steps == 0
                        or step % config.log_every_steps == 0):
                    process(*pending)  # nothing is saved before its step is known to be finite
                    pending = None
                eval_metrics = None
                if evaluate_now:
                    with report.timed("eval"):
                        results = validate(config, graphdef,
                                           train_step.eval_params(state, decay), mesh)
                    _write_eval(writer, step, results)
                    eval_metrics = {checkpointing.BEST_METRIC: _overall(results)["psnr"]}
                    logging.info("step %d: validation %s", step, summary(results))
                meta["train_seconds"] += time.perf_counter() - t_start
                t_start = time.perf_counter()
                with report.timed("checkpoint"):
                    # An evaluated step is always saved, so that the best one can be kept.
                    if ckpt.save(step, state, train_iter, meta, metrics=eval_metrics,
                                 force=stop or eval_metrics is not None):
                        last_saved = step
                if stop:
                    logging.warning("preempted: checkpoint at step %d in %s; rerun the same "
                                    "command to resume", step, ckpt.directory)
                    return None
            if pending is not None:
                process(*pending)
            meta["train_seconds"] += time.perf_counter() - t_start

            results = validate(config, graphdef, train_step.eval_params(state, decay), mesh)
            _write_eval(writer, step, results)
            logging.info("step %d: final validation %s", step, summary(results))
            if last_saved != step:
                ckpt.save(step, state, train_iter, meta, force=True,
                          metrics={checkpointing.BEST_METRIC: _overall(results)["psnr"]})
    finally:
        ckpt.close()  # waits for the pending asynchronous save, whatever happened
    export = export_model(graphdef, train_step.eval_params(state, decay), workdir)
    results = {k: v for k, v in results.items() if k != "samples"}
    results.update(steps=step, train_seconds=round(meta["train_seconds"], 1), checkpoint=export,
                   resumed_from=start)
    if is_main:
        epath.Path(workdir, "eval_results.json").write_text(json.dumps(results, indent=1))
    return results


def _finished_results(workdir: str, latest: int, config: ml_collections.ConfigDict) -> dict | None:
    """The saved results when ``workdir`` holds this run finished and exported, else None."""
    saved = epath.Path(workdir, "eval_results.json")
    if latest < config.num_train_steps or not saved.exists():
        return None
    if not epath.Path(workdir, "model").is_dir():
        return None
    results = json.loads(saved.read_text())
    if results.get("steps") != latest:
        return None
    logging.info("%s already holds the finished run (step %d of %d, model %s); %s", workdir,
                 latest, config.num_train_steps, results["checkpoint"], summary(results))
    return results


def export_model(graphdef: nnx.GraphDef, params: nnx.State, workdir: str) -> str:
    """Writes the final weights to ``WORKDIR/model/`` (replacing an older export); returns it."""
    path = os.path.join(workdir, "model")
    checkpointing.save_model(path, nnx.merge(graphdef, params), force=True)
    logging.info("exported the model to %s", path)
    return path


def summary(results: dict) -> str:
    """One line: PSNR / SSIM (and the image count) per group."""
    return ", ".join(f"{g}: {r['psnr']:.2f} dB / {r['ssim']:.4f} (n={r['count']})"
                     for g, r in results["groups"].items())


def _flat(config: ml_collections.ConfigDict, prefix: str = "") -> dict:
    out = {}
    for k, v in config.items():
        if isinstance(v, ml_collections.ConfigDict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
