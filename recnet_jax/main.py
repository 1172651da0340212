"""Trains RECNet: ``python -m recnet_jax.main --config configs/default.py --workdir runs/x``.

This file is intentionally kept short: the work is in :mod:`recnet_jax.train`, which tests and
notebooks import. Command-line overrides follow ml_collections, e.g.
``--config.num_train_steps=1000 --config.optim.learning_rate=2e-4``; an unknown key or a value of
the wrong type is the config flag's own error, naming the key.

Run as one of several processes (a TPU pod slice, a SLURM job, ``launch/local_multiprocess.sh``),
it calls ``jax.distributed.initialize()`` first; the cluster is detected from the environment.
A restart with the same ``--workdir`` resumes from its latest checkpoint.
"""

from __future__ import annotations

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from recnet_jax import runtime, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and the "
                    "exported model (a restart resumes from it).")
config_flags.DEFINE_config_file("config", None, "Training configuration file (configs/*.py).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])

def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; options are --config, --workdir "
                             "and --config.<field>=<value>")
    runtime.quiet_logs()
    runtime.initialize_distributed()
    logging.info("JAX process %d of %d; %d local / %d global devices: %s", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(),
                 jax.local_devices())
    try:
        results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (ValueError, FileNotFoundError, train.NonFiniteLossError) as e:
        logging.error("%s", e)
        sys.exit(1)
    except jax.errors.JaxRuntimeError as e:
        if runtime.is_peer_failure(e):   # another process died: name it and exit (no traceback)
            runtime.fail_on_lost_process(e)
        raise
    if results is None:
        return
    logging.info("done: %d steps; validation %s; model exported to %s", results["steps"],
                 train.summary(results), results["checkpoint"])


if __name__ == "__main__":
    runtime.use_huge_pages()
    app.run(main)
