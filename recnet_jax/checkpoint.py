"""Model-only Orbax checkpoints: the parameters plus the architecture, in one atomic directory.

    recnet_jax.checkpoint.save_model("ckpt/recnet", model)
    model = recnet_jax.checkpoint.load_model("ckpt/recnet")

Layout: ``<dir>/params`` (Orbax StandardSave of ``nnx.state(model, nnx.Param)``) and
``<dir>/config`` (JSON: ``RECNet.config()``). Orbax writes into a temporary directory and renames it
when complete, so a crash never leaves a directory that looks like a finished checkpoint.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from flax import nnx


def save_model(path: str, model, *, force: bool = False) -> str:
    """Saves ``model`` (a RECNet) to the directory ``path``; returns the absolute path."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not force:
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
    from recnet_jax.model import RECNet

    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(os.path.join(path, "params")) or not os.path.exists(os.path.join(path, "config")):
        raise FileNotFoundError(f"{path} is not a recnet_jax model checkpoint (expected the "
                                "'params' and 'config' items written by recnet_jax.checkpoint.save_model)")
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
