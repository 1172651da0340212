"""The training step: the train state, the optimizer and its schedule, and the jitted step.

    state, graphdef = create_train_state(config, mesh)      # TrainState, replicated over the mesh
    step_fn = make_train_step(config, graphdef, mesh)        # jit, state donated
    state, metrics = step_fn(state, batch, rng, vgg)         # batch {'input','target'} [B,H,W,3]

The step is a pure function of (state, batch, rng) plus the frozen VGG16 of the ECR, jitted with
explicit shardings over a ``data`` mesh: parameters and optimizer state replicated, the batch
split along its first axis, no pmap. ``config.batch_size`` is the global batch.

It needs only the model, the objective and optax: the loop around it (:mod:`recnet_jax.train`:
data, checkpoints, TensorBoard through clu, which loads TensorFlow, about 450 MB resident) is not
imported, so a process that only runs steps (``python -m recnet_jax.bench --train``) holds none
of it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from flax import nnx, struct

from recnet_jax import losses, sharding, weights
from recnet_jax.model import RECNet

DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
MODEL_KEYS = ("nc", "num_blocks", "num_heads", "blur_size", "norm_variant", "norm_eps")


class TrainState(struct.PyTreeNode):
    """Everything a step changes, as one pytree (checkpointed whole).

    Attributes:
      step: int32 scalar, the number of updates applied so far.
      params: ``nnx.State`` of the model's ``nnx.Param`` variables.
      opt_state: the optax state of :func:`make_optimizer`.
      rng: uint32 raw key data, the run's base key; the step folds it with ``step`` (RECNet's
        forward is deterministic, so nothing consumes it yet; it is checkpointed so that a
        stochastic term would resume exactly).
      ema: the exponential moving average of ``params`` with ``config.ema_decay``, started at
        zeros and not yet debiased (:func:`eval_params` gives the weights); zeros while the
        decay is 0.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    ema: Any


def ema_decay(config: ml_collections.ConfigDict) -> float:
    """``config.ema_decay`` (0 when absent: no moving average), checked to lie in [0, 1)."""
    decay = float(config.get("ema_decay", 0.0))
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"config.ema_decay={decay} must be in [0, 1) (0 turns the average off)")
    return decay


def eval_params(state: TrainState, ema_decay: float) -> Any:
    """The weights that validation and the export use: the debiased moving average
    ``ema / (1 - decay^step)`` when ``ema_decay`` > 0 and a step was taken, else ``params``."""
    step = int(state.step)
    if not ema_decay or step == 0:
        return state.params
    correction = 1.0 - float(ema_decay) ** step
    return jax.tree.map(lambda e: e / jnp.asarray(correction, e.dtype), state.ema)


# ---- model and optimizer ---------------------------------------------------------------------

def model_kwargs(config: ml_collections.ConfigDict) -> dict:
    """RECNet constructor arguments from ``config.model`` (``dtype`` named as a string)."""
    m = config.model
    if m.dtype not in DTYPES:
        raise ValueError(f"config.model.dtype={m.dtype!r}: expected one of {sorted(DTYPES)}")
    return dict({k: m[k] for k in MODEL_KEYS}, conv_impl=m.conv_impl, dtype=DTYPES[m.dtype],
                remat=m.get("remat", False))


def architecture(config: ml_collections.ConfigDict) -> dict:
    """The architecture fields of ``config.model`` (what a checkpoint must match)."""
    return {k: config.model[k] for k in MODEL_KEYS}


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """The learning rate per update: the release's piecewise-constant decay, or warm-up + cosine."""
    o = config.optim
    if o.schedule == "piecewise":
        return optax.piecewise_constant_schedule(
            o.learning_rate, {int(b): o.lr_decay for b in o.lr_boundaries})
    if o.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=o.learning_rate, warmup_steps=o.warmup_steps,
            decay_steps=max(config.num_train_steps, o.warmup_steps + 1),
            end_value=o.learning_rate * o.final_lr_fraction)
    raise ValueError(f"config.optim.schedule={o.schedule!r}: expected 'piecewise' or 'cosine'")


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam (``config.optim``: b1, b2, eps, no weight decay) on :func:`make_schedule`, after
    global-norm clipping when ``config.optim.grad_clip`` > 0."""
    o = config.optim
    adam = optax.adam(make_schedule(config), b1=o.b1, b2=o.b2, eps=o.eps)
    if o.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(o.grad_clip), adam)
    return adam


def _init_from(config: ml_collections.ConfigDict) -> nnx.State:
    """The parameters of ``config.init_from``: whatever :func:`recnet_jax.weights.resolve`
    accepts (a model export or training workdir, an official .pth / .npz, a demo results.json)."""
    try:
        model, description = weights.load(config.init_from, norm_variant=config.model.norm_variant)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"config.init_from: {e}") from None
    found = {k: v for k, v in model.config().items() if k in MODEL_KEYS and k != "norm_variant"}
    wanted = {k: v for k, v in architecture(config).items() if k in found}
    if found != wanted:
        raise ValueError(f"config.init_from={config.init_from!r} holds RECNet{found}, but "
                         f"config.model asks for RECNet{wanted}; change config.model or the weights")
    logging.info("initialised from %s", description)
    return nnx.state(model, nnx.Param)


def create_train_state(config: ml_collections.ConfigDict,
                       mesh: jax.sharding.Mesh) -> tuple[TrainState, nnx.GraphDef]:
    """The initial train state, replicated over ``mesh``, and the model's graphdef.

    Parameters come from ``config.init_from`` when set, else from PyTorch's default init with
    ``config.seed``."""
    abstract = nnx.eval_shape(lambda: RECNet(**model_kwargs(config), rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(abstract, nnx.Param)
    tx = make_optimizer(config)
    replicated = sharding.replicated(mesh)

    def init(params):
        if params is None:  # a fresh init, traced: one compile instead of an eager op per shape
            params = nnx.state(RECNet(**model_kwargs(config), rngs=nnx.Rngs(config.seed)), nnx.Param)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=tx.init(params),
                          rng=jax.random.PRNGKey(config.seed).astype(jnp.uint32),
                          ema=jax.tree.map(jnp.zeros_like, params))

    params = None
    if config.init_from:
        params = jax.device_put(_init_from(config), replicated)
    state = jax.jit(init, out_shardings=replicated)(params)
    return state, graphdef


# ---- the step --------------------------------------------------------------------------------

def make_train_step(config: ml_collections.ConfigDict, graphdef: nnx.GraphDef,
                    mesh: jax.sharding.Mesh) -> Callable:
    """``step(state, batch, rng, vgg) -> (state, metrics)``, jitted with shardings, state donated.

    Args (of the returned function):
      state: :class:`TrainState`, replicated.
      batch: ``{'input', 'target'}`` float32 [B, H, W, 3] in [0, 1], sharded on ``data``.
      rng: uint32 [2], the run's base key (folded with ``state.step``).
      vgg: the frozen VGG16 of the ECR (``losses.vgg_from_config``), or None; not trained.
    Returns:
      the new state and float32 scalars: every loss term (unweighted), ``total``, ``grad_norm``
      and ``lr`` (the rate this update used).
    """
    tx = make_optimizer(config)
    schedule = make_schedule(config)
    weights = dict(config.loss.weights)
    decay = ema_decay(config)
    replicated, data = sharding.replicated(mesh), sharding.data_sharded(mesh)

    def step(state: TrainState, batch: dict, rng: jax.Array, vgg) -> tuple[TrainState, dict]:
        del rng  # RECNet's forward and loss are deterministic; a stochastic term would use
        # jax.random.fold_in(rng, state.step)
        def loss_fn(params):
            out = nnx.merge(graphdef, params)(batch["input"])
            terms = losses.loss_terms(out, batch["input"], batch["target"], vgg, weights)
            return terms["total"], terms

        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema
        if decay:
            ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
        metrics = dict(terms, grad_norm=optax.tree.norm(grads), lr=schedule(state.step))
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                             ema=ema), metrics

    return jax.jit(step, in_shardings=(replicated, data, replicated, replicated),
                   out_shardings=(replicated, replicated), donate_argnums=0)
