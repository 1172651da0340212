"""The one Orbax wrapper: training checkpoints (exact resume) and model-only exports.

**Training checkpoints** (:class:`TrainCheckpointer`, in ``WORKDIR/checkpoints/<step>/``): the
train state (parameters, optimizer state, step, rng), the grain iterator state of every process
and a JSON ``meta`` item (the architecture, the global batch size). Saves are asynchronous; the
latest ``keep`` are kept, plus the best by validation PSNR. Orbax writes each step into a
temporary directory and renames it when complete, so a crash never leaves a checkpoint that looks
finished, and a restart resumes from the latest complete one.

**Model exports** (:func:`save_model` / :func:`load_model`)::

    recnet_jax.checkpointing.save_model("ckpt/recnet", model)
    model = recnet_jax.checkpointing.load_model("ckpt/recnet")

Layout: ``<dir>/params`` (Orbax StandardSave of ``nnx.state(model, nnx.Param)``) and
``<dir>/config`` (JSON: ``RECNet.config()``), one atomic directory. The trainer exports its final
weights to ``WORKDIR/model/`` this way.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx
from orbax.checkpoint import checkpoint_managers as policies

from recnet_jax.model import RECNet

BEST_METRIC = "val_psnr"


class TrainCheckpointer:
    """Training checkpoints of one workdir (an ``ocp.CheckpointManager``).

    Args:
      directory: ``WORKDIR/checkpoints``.
      every_steps: save when ``step % every_steps == 0`` (and on :meth:`save` with ``force``).
      keep: how many of the latest checkpoints to keep; the best by ``val_psnr`` is kept too.
    """

    def __init__(self, directory: str, *, every_steps: int, keep: int):
        if every_steps <= 0 or keep <= 0:
            raise ValueError(f"config.checkpoint_every_steps ({every_steps}) and "
                             f"config.keep_checkpoints ({keep}) must be positive")
        self.directory = abspath(directory)
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=policies.AnySavePolicy([
                policies.FixedIntervalPolicy(every_steps),
                policies.PreemptionCheckpointingPolicy()]),
            preservation_policy=policies.AnyPreservationPolicy([
                policies.LatestN(keep),
                policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1,
                               keep_checkpoints_without_metrics=False)]),
            enable_async_checkpointing=True,
            create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The step of the latest complete checkpoint, or None."""
        return self.manager.latest_step()

    def read_meta(self, step: int) -> dict:
        """The JSON ``meta`` item of checkpoint ``step``."""
        return dict(self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore())).meta)

    def save(self, step: int, state: Any, data_iter: grain.DatasetIterator, meta: dict, *,
             metrics: dict | None = None, force: bool = False) -> bool:
        """Starts an asynchronous save of ``state`` and the iterator at ``step`` if the policy (or
        ``force``) says so; returns whether it saves. Every process calls it."""
        saved = self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iter),
            meta=ocp.args.JsonSave(meta)), metrics=metrics, force=force)
        if saved:
            logging.info("checkpoint: saving step %d to %s (asynchronous)", step, self.directory)
        return saved

    def restore(self, step: int, abstract_state: Any, data_iter: grain.DatasetIterator) -> Any:
        """Restores checkpoint ``step`` onto ``abstract_state``'s shardings (any device count)
        and sets ``data_iter`` to the saved position; returns the state.

        A checkpoint of another process count holds no iterator file for this process; every
        process of a run is at the same position (one host batch per step), so the saved
        position is used as it is (:func:`_saved_data_state`)."""
        data_dir = epath.Path(self.directory) / str(step) / "data"
        own = data_dir / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if own.exists() or not data_dir.is_dir():
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=grain.checkpoint.CheckpointRestore(data_iter)))
            return restored.state
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
        data_iter.set_state(_saved_data_state(data_dir))
        logging.info("checkpoint %d was written by another number of processes; the data iterator "
                     "resumes at the same position (the same batches if config.data.num_shards "
                     "was fixed)", step)
        return restored.state

    def reached_preemption(self, step: int) -> bool:
        """True once the JAX runtime has seen a preemption notice (multi-process runs)."""
        return self.manager.reached_preemption(step)

    def wait(self) -> None:
        """Blocks until the pending asynchronous save is complete on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abspath(path) -> str:
    """``os.path.abspath`` of a local path; a URL such as ``gs://bucket/run`` stays as it is."""
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(path)


def _saved_data_state(data_dir: epath.Path) -> dict:
    """The iterator state that every process of the saving run wrote (they are identical)."""
    states = {f.name: json.loads(f.read_text()) for f in sorted(data_dir.iterdir())
              if f.name.startswith("process_") and f.name.endswith(".json")}
    if not states or any(v != next(iter(states.values())) for v in states.values()):
        raise ValueError(f"{data_dir}: the data iterator states of the saving processes are missing "
                         f"or differ ({states}); resume with the process count that wrote them")
    return next(iter(states.values()))


def abstract_like(tree: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves carrying ``tree``'s shardings: a restore target."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def save_model(path: str, model, *, force: bool = False) -> str:
    """Saves ``model`` (a RECNet) to the directory ``path``; returns the absolute path."""
    path = abspath(path)
    if epath.Path(path).exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True (or choose another --out) to replace it")
    state = nnx.state(model, nnx.Param)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(path, args=ocp.args.Composite(params=ocp.args.StandardSave(state),
                                                 config=ocp.args.JsonSave(model.config())),
                   force=force)
    return path


def load_model(path: str, *, conv_impl: str = "auto", dtype=None, norm_variant: str | None = None):
    """Loads a RECNet saved by :func:`save_model` onto the default device.

    ``norm_variant`` overrides the saved variant (both variants share the parameters).
    """
    path = abspath(path)
    if not (epath.Path(path) / "params").is_dir() or not (epath.Path(path) / "config").exists():
        raise FileNotFoundError(f"{path} is not a recnet_jax model checkpoint (expected the "
                                "'params' and 'config' items written by recnet_jax.checkpointing.save_model)")
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        config = ckptr.restore(path, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
        if norm_variant is not None:
            config = dict(config, norm_variant=norm_variant)
        abstract = nnx.eval_shape(lambda: RECNet(**config, conv_impl=conv_impl, dtype=dtype,
                                                 rngs=nnx.Rngs(0)))
        graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                              params)
        restored = ckptr.restore(path, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(target))).params
    return nnx.merge(graphdef, restored, rest)
