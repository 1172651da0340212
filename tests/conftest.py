"""Test-wide JAX set-up: CPU, cheap compiles (LLVM at -O0, XLA's LLVM IR fusion emitter), the
persistent compilation cache, 8 fake CPU devices, highest matmul precision (parity tests compare
against float32 PyTorch to 1e-5). The PRNG is JAX's default (partitionable threefry), as in the
trainer: RECNet's init then makes all its draws in one program (``conv.batched_draws``); with
``rbg`` each parameter is a draw of its own, and ``create_train_state`` of the one-block test model
took 4.9 s instead of 2.8 s (5 blocks: 20.8 s instead of 6.5 s)."""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The test processes, and every process they start (they inherit the environment), compile with
# two XLA flags that make the CPU compiles of this compile-bound suite (tiny images) cheaper:
# * LLVM at -O0: it changes how the fused loops are optimised, not what they compute (no fast-math
#   either way). Measured with make test's pytest command, cold cache: 1453 -> 1162
#   worker-seconds, 760 -> 607 s.
# * XLA's LLVM IR emitter for the loop fusions instead of its MLIR fusion emitters: the same fused
#   HLO, code generated another way; the tiny training step of test_train compiles in 4-6 s
#   instead of 10-12 s. Every tolerance of the suite holds, bit-exact resume included (both runs
#   compile the same way). make test, cold cache, back to back: 527 s -> 408 s. (The code it
#   generates runs slower: 512^2 inference about 1.5x; tests only.) XLA stops at an unknown flag:
#   should a later jaxlib drop this one, drop it here too.
# One parity test compiles the way users do, at XLA's defaults (test_model.PRODUCTION).
OPTIMIZATION_FLAG = "--xla_backend_optimization_level=0"
FUSION_EMITTER_FLAG = "--xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = " ".join(
    f for f in (os.environ.get("XLA_FLAGS", ""), OPTIMIZATION_FLAG, FUSION_EMITTER_FLAG) if f)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]

jax.config.update("jax_compilation_cache_dir", os.environ.get(
    "JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_num_cpu_devices", 8)  # data-parallel tests; computations default to device 0
jax.config.update("jax_default_matmul_precision", "highest")

try:  # absl-using code (grain) reads flags; pytest never parses them.
    from absl import flags
    flags.FLAGS.mark_as_parsed()
except ImportError:  # pragma: no cover
    pass


def fixtures_dir() -> pathlib.Path:
    """The shared parity fixtures: ../shared/fixtures beside the repo (RECNET_FIXTURES overrides)."""
    return pathlib.Path(os.environ.get("RECNET_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixture_path():
    def get(name: str) -> pathlib.Path:
        path = fixtures_dir() / name
        if not path.exists():
            pytest.fail(f"missing shared fixture {path}; tests need ../shared/fixtures beside the repo "
                        "(or RECNET_FIXTURES pointing at it)")
        return path
    return get


@pytest.fixture(scope="session")
def parity(fixture_path):
    """The official PyTorch outputs on fixed weights and inputs (official_recnet_parity_a.npz)."""
    return dict(np.load(fixture_path("official_recnet_parity_a.npz")))
