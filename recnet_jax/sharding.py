"""The device mesh and the shardings of training: data parallelism with jit (no pmap).

One mesh axis, ``data``, over every device of every process. Parameters and optimizer state are
replicated (RECNet has 38,975 parameters); each batch is split along its first axis.

    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, mesh)   # clear error unless it divides evenly
    batch = sharding.shard_batch(host_batch, mesh)       # this host's rows -> one global array
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Any | None = None) -> Mesh:
    """A 1-D mesh with axis ``data`` over ``devices`` (default: all devices of all processes).

    The axis is ``Auto``: jit propagates the shardings given at its boundary (``jax.make_mesh``
    defaults to ``Explicit`` axes, whose sharding-in-types mode the model code does not need)."""
    if devices is None:
        return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))
    return Mesh(np.asarray(devices).reshape(-1), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, scalars)."""
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Split along the first (batch) axis over ``data``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, field: str = "config.batch_size") -> int:
    """Returns the per-process batch size; raises ValueError naming ``field`` unless
    ``batch_size`` divides evenly over the mesh's devices (and so over the processes)."""
    devices = mesh.devices.size
    if batch_size <= 0 or batch_size % devices:
        raise ValueError(
            f"{field}={batch_size} is the global batch (across all devices and hosts) and must be a "
            f"positive multiple of the device count {devices} ({jax.process_count()} process(es) x "
            f"{jax.local_device_count()} local device(s)); try {field}="
            f"{max(1, round(batch_size / devices)) * devices}")
    return batch_size // jax.process_count()


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh,
                keys: tuple[str, ...] = ("input", "target")) -> dict[str, jax.Array]:
    """This process's part of a batch (numpy, [B_local, ...]) -> global arrays sharded on ``data``.

    Built with ``jax.make_array_from_process_local_data``, so the global batch is the processes'
    rows concatenated in process order. Only ``keys`` are moved (strings stay on the host).
    """
    sharding = data_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in keys}
