"""Process set-up shared by the command-line entry points: multi-process initialisation and a
log that shows progress and results rather than the libraries' bookkeeping.

**Multi-process runs** (:func:`initialize_distributed`) use JAX's multi-controller runtime,
``jax.distributed.initialize``, as it is. The cluster comes from the environment:

* Cloud TPU VMs, SLURM (``srun``), Open MPI: detected by JAX itself (``launch/tpu_pod.sh`` sets
  ``RECNET_DISTRIBUTED=1``, which asks for the detection even where no variable below is set);
* anything else, e.g. ``launch/local_multiprocess.sh``: ``JAX_COORDINATOR_ADDRESS`` (host:port of
  process 0), ``RECNET_NUM_PROCESSES`` and ``RECNET_PROCESS_ID``. A loopback coordinator
  (``127.0.0.1``) makes every socket of the run loopback-only: the coordination service binds to it
  and the CPU collectives (gloo) bind to ``127.0.0.1`` too.

``RECNET_HEARTBEAT_TIMEOUT_S`` (default: JAX's, 100 s) bounds how long the others run on after a
process dies: the coordination service declares a process dead when its heartbeats stop for that
long and ends every other process with a message naming it. ``RECNET_INIT_TIMEOUT_S`` (default:
JAX's, 300 s) bounds the wait for all processes to connect. Fake CPU devices per process come
from JAX's own ``JAX_NUM_CPU_DEVICES``.

**Memory** (:func:`release_freed_memory`): after XLA compiles the training step, the heap it freed
stays resident (glibc keeps it); the trainer hands it back once, after the first step.

**Huge pages** (:func:`use_huge_pages`): the commands run with glibc's malloc backing its large
blocks with transparent huge pages (:data:`HUGE_PAGES_TUNABLE`), which makes XLA's CPU programs,
which allocate their temporaries afresh on every call, about 10% faster.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging as std_logging
import os
import sys
import threading
from typing import NoReturn

import jax
import jax.extend.backend
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax._src import distributed as jax_distributed  # the client: live processes

# Libraries whose INFO lines describe their own bookkeeping (Orbax's per-save traces, TFDS's
# "Load dataset info"); their warnings and errors still show, and --v=1 shows everything.
QUIET_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/grain/")

# Environment variables that mean "this is one process of several".
CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
               "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "RECNET_DISTRIBUTED")
# Explicit process layout (launch/local_multiprocess.sh); JAX_COORDINATOR_ADDRESS gives the address.
ENV_NUM_PROCESSES = "RECNET_NUM_PROCESSES"
ENV_PROCESS_ID = "RECNET_PROCESS_ID"
ENV_HEARTBEAT_TIMEOUT = "RECNET_HEARTBEAT_TIMEOUT_S"
ENV_INIT_TIMEOUT = "RECNET_INIT_TIMEOUT_S"
JAX_DEFAULT_HEARTBEAT_S = 100   # jax.distributed.initialize's heartbeat_timeout_seconds default
EXIT_LOST_PROCESS = 3           # exit status of a process that lost a peer (see fail_on_lost_process)
# Error texts of a cross-process operation that failed because a peer went away.
_PEER_FAILURE_MARKS = ("gloo", "connection reset", "connection closed", "connection refused",
                       "socket closed", "unavailable", "heartbeat", "barrier", "coordination service")


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


MEMORY_OPTIMIZED_CPU = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def inference_compiler_options() -> dict | None:
    """XLA options for inference programs: the memory-optimised scheduler on CPU, else None (the
    default, concurrency-optimised scheduler keeps about 800 bytes per pixel live for RECNet)."""
    return dict(MEMORY_OPTIMIZED_CPU) if jax.default_backend() == "cpu" else None


def inference_jit(fn, **kwargs):
    """``jax.jit`` with :func:`inference_compiler_options` (inference programs; not the training
    step, where that scheduler is slower and needs more memory)."""
    return jax.jit(fn, compiler_options=inference_compiler_options(), **kwargs)


# glibc's malloc tunable that backs its large blocks (those it maps with mmap, from 128 kB) with
# transparent huge pages. XLA's CPU runtime allocates each program's temporaries afresh per call
# (151 MB for 512^2 inference), so without it every call faults in and zeroes about 34,000 4 kB
# pages; measured at 512^2 on 2 cores: 560 faults per call instead of 33,800, and the call about
# 10% faster (fewer TLB misses too). PyTorch's CPU inference was not measurably affected.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
ENV_HUGE_PAGES = "RECNET_HUGE_PAGES"      # "0" turns the re-execution of use_huge_pages off
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_pages_env(env: dict | None = None) -> dict:
    """A copy of ``env`` (default ``os.environ``) whose ``GLIBC_TUNABLES`` also holds
    :data:`HUGE_PAGES_TUNABLE`: on Linux, unless ``RECNET_HUGE_PAGES=0``, the kernel's transparent
    huge pages are ``never``, or ``GLIBC_TUNABLES`` already sets ``glibc.malloc.hugetlb``."""
    env = dict(os.environ if env is None else env)
    if not sys.platform.startswith("linux") or env.get(ENV_HUGE_PAGES, "1") == "0":
        return env
    try:
        with open(_THP_MODE, encoding="ascii") as f:
            if "[never]" in f.read():
                return env
    except OSError:
        return env
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" not in tunables:
        env["GLIBC_TUNABLES"] = ":".join(t for t in (tunables, HUGE_PAGES_TUNABLE) if t)
    return env


def use_huge_pages() -> None:
    """Runs this command again, once, with :func:`huge_pages_env` (the same interpreter, arguments
    and environment otherwise), when that changes ``GLIBC_TUNABLES``; otherwise returns.

    glibc reads its tunables only when a process starts, hence the re-execution; call it first
    thing in a command's ``__main__`` (never from a library function: it replaces the process).
    ``RECNET_HUGE_PAGES=0`` turns it off; the Makefile exports the tunable (no re-execution).
    """
    env = huge_pages_env()
    if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
        return
    argv = getattr(sys, "orig_argv", None)
    if not argv:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)


def release_freed_memory() -> bool:
    """Returns the C heap's free pages to the OS (glibc ``malloc_trim(0)``); False where there is no
    glibc (macOS, musl). Nothing in use is touched.

    Compiling the training step (8 x 256^2, CPU) leaves about 0.6 GB of freed compiler memory
    resident; without this the process holds it for the whole run.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _int_env(name: str, minimum: int = 0, maximum: int | None = None) -> int:
    text = os.environ.get(name, "")
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise ValueError(f"environment variable {name}={text!r} must be an integer of at least "
                         f"{minimum}{bound}")
    return value


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` (or ``[v6]:port``) names this machine's loopback interface."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cpu_collectives_on_loopback() -> None:
    """Makes the CPU client's gloo collectives listen on 127.0.0.1 (by default gloo binds to the
    address the machine's host name resolves to, which may face the network)."""
    try:
        from jax._src import xla_bridge
        from jax._src.lib import _jax
    except ImportError:  # pragma: no cover - another jax than the pinned one
        logging.warning("CPU collectives: cannot bind gloo to 127.0.0.1 with this jax; it binds to "
                        "the host name's address")
        return

    def make_cpu_client():
        collectives = _jax.make_gloo_tcp_collectives(
            distributed_client=jax_distributed.global_state.client, hostname="127.0.0.1")
        return xla_bridge.make_cpu_client(collectives=collectives)

    jax.extend.backend.register_backend_factory("cpu", make_cpu_client, priority=0,
                                                fail_quietly=False)


def initialize_distributed() -> None:
    """``jax.distributed.initialize`` when the environment describes a multi-process job (module
    docstring: which variables, the heartbeat and the loopback rules); nothing otherwise.

    Call it before any JAX computation. CPU processes use gloo collectives.

    Raises:
      ValueError: a malformed ``RECNET_*`` variable, or ``RECNET_NUM_PROCESSES`` without
        ``JAX_COORDINATOR_ADDRESS`` (the message names them).
      RuntimeError: the processes did not all connect to the coordinator in time.
    """
    explicit = ENV_NUM_PROCESSES in os.environ
    if not explicit and (os.environ.get("SLURM_NTASKS") == "1"
                         or not any(os.environ.get(k) for k in CLUSTER_ENV)):
        return
    kwargs: dict = {}
    if explicit:
        num = _int_env(ENV_NUM_PROCESSES, minimum=1)
        pid = _int_env(ENV_PROCESS_ID, minimum=0, maximum=num - 1)
        address = os.environ.get("JAX_COORDINATOR_ADDRESS", "")
        if ":" not in address:
            raise ValueError(f"{ENV_NUM_PROCESSES}={num} needs JAX_COORDINATOR_ADDRESS=host:port of "
                             f"process 0 (got {address!r}); launch/local_multiprocess.sh sets both")
        if num == 1:
            return
        kwargs.update(coordinator_address=address, num_processes=num, process_id=pid)
        if is_loopback(address):
            kwargs["coordinator_bind_address"] = address
            _cpu_collectives_on_loopback()
    if ENV_HEARTBEAT_TIMEOUT in os.environ:
        kwargs["heartbeat_timeout_seconds"] = _int_env(ENV_HEARTBEAT_TIMEOUT, minimum=1)
    if ENV_INIT_TIMEOUT in os.environ:
        kwargs["initialization_timeout"] = _int_env(ENV_INIT_TIMEOUT, minimum=1)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, jax.errors.JaxRuntimeError) as e:  # the connect timed out
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = kwargs.get("coordinator_address") or "the coordinator detected from the environment"
        raise RuntimeError(
            f"jax.distributed.initialize could not connect this process to {where} ({first}); "
            "start every process of the job (all of them must connect within "
            f"{ENV_INIT_TIMEOUT}, default 300 s) and check that process 0 is reachable") from None
    logging.info("jax.distributed: process %d of %d, coordinator %s, heartbeat timeout %d s",
                 jax.process_index(), jax.process_count(),
                 jax_distributed.global_state.coordinator_address, heartbeat_timeout())
    if jax.default_backend() == "cpu":
        _connect_cpu_collectives()


# A coordination-service barrier's timeout (it does not depend on gloo's 30 s).
CONNECT_BARRIER_TIMEOUT_S = 600


def _connect_cpu_collectives() -> None:
    """Connects the CPU (gloo) collectives of all devices now, while the processes are together.

    Gloo connects a communicator at its first collective and gives every process 30 s (a fixed
    timeout) to join it; a process that comes later fails with "Gloo context initialization
    failed: ... GetKeyValue() timed out". Left to the training step, that first collective comes
    after the step's compilation, and on a loaded machine (or with a compilation cache that one
    process hits and the other misses) the processes reach it minutes apart. Later collectives
    on a connected communicator wait for the slowest process without that limit. So: a
    coordination-service barrier, then one tiny all-reduce over every device of every process,
    compiled before the barrier.
    """
    devices = jax.devices()
    mesh = jax.sharding.Mesh(np.asarray(devices), ("all",))
    ones = jax.make_array_from_process_local_data(
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("all")),
        np.ones(jax.local_device_count(), np.int32))
    total = jax.jit(jnp.sum, out_shardings=jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec())).lower(ones).compile()
    jax_distributed.global_state.client.wait_at_barrier("recnet_connect_cpu_collectives",
                                                        CONNECT_BARRIER_TIMEOUT_S * 1000)
    connected = int(total(ones))
    if connected != len(devices):  # pragma: no cover - a broken collective
        raise RuntimeError(f"CPU collectives: the all-reduce over {len(devices)} devices gave "
                           f"{connected}")


def heartbeat_timeout() -> int:
    """The heartbeat timeout of this run in seconds (``RECNET_HEARTBEAT_TIMEOUT_S`` or JAX's)."""
    if ENV_HEARTBEAT_TIMEOUT in os.environ:
        return _int_env(ENV_HEARTBEAT_TIMEOUT, minimum=1)
    return JAX_DEFAULT_HEARTBEAT_S


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` (raised in a multi-process run) looks like a lost peer: a failed
    collective or coordination-service call, rather than this process's own error."""
    text = str(error).lower()
    return jax.process_count() > 1 and any(mark in text for mark in _PEER_FAILURE_MARKS)


def _live_processes(timeout_s: float) -> set[int] | None:
    """The processes the coordination service still counts as alive (it answers once the dead
    ones have missed their heartbeats); None if the coordinator itself is unreachable; all of
    them if it gave no answer within ``timeout_s``."""
    everyone = list(range(jax.process_count()))
    answer: dict = {}

    def ask():
        try:
            answer["live"] = set(jax_distributed.global_state.client.get_live_nodes(everyone))
        except Exception as e:  # noqa: BLE001  (an RPC error: the service is gone)
            answer["error"] = e

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "error" in answer:
        return None
    return answer.get("live", set(everyone))


def fail_on_lost_process(error: BaseException) -> NoReturn:
    """Ends this process (exit status :data:`EXIT_LOST_PROCESS`) after a cross-process operation
    failed because another process went away, naming the lost process(es).

    The JAX runtime's heartbeat may end the process first, with its own message naming the lost
    task ("The following tasks are unhealthy (stopped sending heartbeats): 1"). Skips
    ``jax.distributed.shutdown``, whose barrier would wait for the dead process.
    """
    me, count = jax.process_index(), jax.process_count()
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    timeout = heartbeat_timeout()
    logging.error("process %d of %d: an operation across processes failed (%s); another process "
                  "has probably died. Asking the JAX coordination service which one (it knows "
                  "within the heartbeat timeout, %d s).", me, count, first, timeout)
    live = _live_processes(timeout + 10)
    if live is None:
        lost = "process 0 (the coordinator) is unreachable: it has died"
    elif set(range(count)) - live:
        gone = sorted(set(range(count)) - live)
        lost = (f"lost process {gone[0]}" if len(gone) == 1 else
                f"lost processes {', '.join(map(str, gone))}") + " (no heartbeat)"
    else:
        lost = "no process was declared lost; the error above is the cause"
    logging.error("process %d of %d exits: %s. Rerun the same launch command to resume from the "
                  "last checkpoint in the workdir.", me, count, lost)
    logging.flush()
    os._exit(EXIT_LOST_PROCESS)
