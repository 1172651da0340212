"""Rematerialisation of the region-aware blocks that stays in place on every backend.

Training keeps every block's activations for the backward pass (about 1 GB per block at
8 x 256^2 in fp32). With ``RECNet(remat=True)`` each block keeps only its inputs and recomputes
its forward inside its own backward.

``jax.checkpoint`` does not achieve this on CPU: it guards the recomputation with
``optimization_barrier``, which XLA's CPU pipeline removes, and the recomputed forwards (which
depend only on saved inputs) are then scheduled ahead of the whole backward, all blocks at once,
so the peak does not drop (measured: the step's temp buffer 5.2 GB either way). Here the
recomputation's inputs are tied to the incoming cotangent by a data dependency (``tie``: adding
0 * one element of it), so no recomputed value can exist before its block's backward starts.
The tie is exact for finite cotangents and fuses into the consumers of the inputs.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def tie(tree, cotangent: jax.Array):
    """``tree`` with every inexact leaf a + 0 * cotangent[0, ...]: the same values (for a finite
    cotangent), but computed only once ``cotangent`` exists, so XLA cannot schedule work on them
    earlier."""
    zero = jnp.zeros((), cotangent.dtype) * cotangent.reshape(-1)[0]

    def tied(a):
        if not jnp.issubdtype(jnp.result_type(a), jnp.inexact):
            return a
        return a + zero.astype(a.dtype)

    return jax.tree.map(tied, tree)


def rematerialized(fn: Callable) -> Callable:
    """``fn`` (arrays or pytrees of arrays in, a pytree of arrays out) whose backward recomputes
    ``fn``'s forward from its saved arguments, after the output cotangent arrives.

    Same values and gradients as ``fn``; saves only the arguments for the backward.
    """

    @jax.custom_vjp
    def wrapped(*args):
        return fn(*args)

    def fwd(*args):
        return fn(*args), args

    def bwd(args, g):
        return jax.vjp(fn, *tie(args, jax.tree.leaves(g)[0]))[1](g)

    wrapped.defvjp(fwd, bwd)
    return wrapped
