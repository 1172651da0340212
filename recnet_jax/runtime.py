"""Process set-up shared by the command-line entry points: multi-process initialisation and a
log that shows progress and results rather than the libraries' bookkeeping.

Importing this module sets ``TF_CPP_MIN_LOG_LEVEL=1`` (unless set): TensorFlow, which clu's
TensorBoard writer imports, otherwise prints its oneDNN notice at start-up. Entry points import
it before anything that imports TensorFlow.
"""

from __future__ import annotations

import logging as std_logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import jax  # noqa: E402
from absl import logging  # noqa: E402

# Libraries whose INFO lines describe their own bookkeeping (Orbax's per-save traces, TFDS's
# "Load dataset info"); their warnings and errors still show, and --v=1 shows everything.
QUIET_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/grain/")

# Environment variables that mean "this is one process of several".
CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
               "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


class _LibraryInfoFilter(std_logging.Filter):
    """Drops INFO records of :data:`QUIET_LIBRARIES` unless absl's verbosity is raised."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.WARNING or logging.get_verbosity() > logging.INFO:
            return True
        return not any(lib in record.pathname for lib in QUIET_LIBRARIES)


def quiet_logs() -> None:
    """A log of progress and results: JAX's "Unable to initialize backend 'tpu'" probing notes
    (INFO) go, and so do the INFO lines of :data:`QUIET_LIBRARIES`. Warnings always show."""
    std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _LibraryInfoFilter) for f in handler.filters):
        handler.addFilter(_LibraryInfoFilter())


def initialize_distributed() -> None:
    """``jax.distributed.initialize()`` when the environment describes a multi-process job (the
    cluster, coordinator and process id are then detected from it)."""
    if os.environ.get("SLURM_NTASKS") == "1":
        return
    if any(os.environ.get(k) for k in CLUSTER_ENV):
        jax.distributed.initialize()
