#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice: creates the slice (or reuses it), copies this checkout to
# every worker, installs the requirements with jax[tpu], and runs recnet_jax.main on all workers
# at once (`gcloud compute tpus tpu-vm ssh --worker=all`). JAX's multi-controller runtime finds the
# other workers by itself (jax.distributed.initialize on Cloud TPU).
#
#   launch/tpu_pod.sh [--dry_run] --config configs/default.py --workdir gs://BUCKET/runs/msec \
#       [--config.field=value ...]
#
# Every flag except --dry_run goes to `python -m recnet_jax.main` unchanged; --config and
# --workdir are required. The workdir must be reachable by every worker: a gs:// URL, or a path
# under SHARED_MOUNT (e.g. a Filestore/NFS mount present on all workers). config.batch_size is
# the global batch: a multiple of the chip count (32 on a v5litepod-32).
# --dry_run prints the commands (one per line) instead of running them.
#
# Variables (environment; defaults in brackets):
#   TPU_NAME          name of the slice [recnet-pod]
#   ZONE              zone [us-west4-a]
#   PROJECT           GCP project [gcloud's configured project]
#   ACCELERATOR_TYPE  slice type [v5litepod-32]: 8 hosts x 4 v5e chips
#   RUNTIME_VERSION   TPU VM image [v2-alpha-tpuv5-lite]
#   SPOT              1: create a Spot slice (preemptible; a rerun resumes) [0]
#   JAX_TPU_VERSION   the jax[tpu] pin [0.10.2, the version of requirements.txt]
#   PYTHON_BIN        interpreter on the workers; Python 3.11 is installed with apt [python3.11]
#   REMOTE_DIR        where the code goes on each worker [~/recnet-jax]
#   DATA_DIR          the TFDS data_dir on each worker, relative to REMOTE_DIR [data_dir]; passed as
#                     --config.data.data_dir unless the flags set it
#   DATA_SOURCE       gs:// folder copied to DATA_DIR on every worker before training [none]
#   SHARED_MOUNT      a mount shared by all workers, allowed as the workdir's parent [none]
#   HEARTBEAT_TIMEOUT_S  seconds after which a silent worker counts as dead and ends the run [100]
set -euo pipefail

TPU_NAME=${TPU_NAME:-recnet-pod}
ZONE=${ZONE:-us-west4-a}
PROJECT=${PROJECT:-$(gcloud config get-value project 2>/dev/null || echo YOUR_PROJECT)}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v5litepod-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-v2-alpha-tpuv5-lite}
SPOT=${SPOT:-0}
JAX_TPU_VERSION=${JAX_TPU_VERSION:-0.10.2}
PYTHON_BIN=${PYTHON_BIN:-python3.11}
REMOTE_DIR=${REMOTE_DIR:-'~/recnet-jax'}
DATA_DIR=${DATA_DIR:-data_dir}
DATA_SOURCE=${DATA_SOURCE:-}
SHARED_MOUNT=${SHARED_MOUNT:-}
HEARTBEAT_TIMEOUT_S=${HEARTBEAT_TIMEOUT_S:-100}

dry_run=0
flags=()
for arg in "$@"; do
  if [[ "$arg" == --dry_run ]]; then dry_run=1; else flags+=("$arg"); fi
done

# The value of --name (either --name=value or --name value) among the forwarded flags.
flag_value() {
  local name=$1 i
  for ((i = 0; i < ${#flags[@]}; i++)); do
    case "${flags[i]}" in
      "$name="*) echo "${flags[i]#"$name="}"; return ;;
      "$name") echo "${flags[i + 1]:-}"; return ;;
    esac
  done
}
config=$(flag_value --config)
workdir=$(flag_value --workdir)
if [[ -z "$config" || -z "$workdir" ]]; then
  echo "tpu_pod.sh: --config and --workdir are required, e.g. --config configs/default.py" \
       "--workdir gs://BUCKET/runs/msec" >&2
  exit 2
fi
if [[ "$workdir" != gs://* && ( -z "$SHARED_MOUNT" || "$workdir" != "$SHARED_MOUNT"/* ) ]]; then
  echo "tpu_pod.sh: --workdir=$workdir must be shared by all workers: a gs:// URL, or a path under" \
       "SHARED_MOUNT (set SHARED_MOUNT=/mnt/shared for a mount present on every worker)" >&2
  exit 2
fi
if [[ -z "$(flag_value --config.data.data_dir)" ]]; then
  flags+=("--config.data.data_dir=$DATA_DIR")
fi

# One shell-quoted word per argument, for the remote command line.
quote_all() {
  local out="" a
  for a in "$@"; do out+=" $(printf '%q' "$a")"; done
  echo "${out# }"
}

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$ZONE" --project="$PROJECT")
spot_flag=()
[[ "$SPOT" == 1 ]] && spot_flag=(--spot)

create="$(quote_all "${gcloud_tpu[@]}" describe "$TPU_NAME" "${where[@]}") >/dev/null 2>&1 || \
$(quote_all "${gcloud_tpu[@]}" create "$TPU_NAME" "${where[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
  --version="$RUNTIME_VERSION" "${spot_flag[@]}")"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tarball=${TMPDIR:-/tmp}/recnet-jax-code.tar.gz
pack="tar -C $(printf '%q' "$repo") --exclude=.venv --exclude=.git --exclude=.cache --exclude=runs \
--exclude=data_dir --exclude=out --exclude=bench_results -czf $(printf '%q' "$tarball") ."
copy="$(quote_all "${gcloud_tpu[@]}" scp "$tarball" "$TPU_NAME:recnet-jax-code.tar.gz" --worker=all "${where[@]}")"

setup="set -e; (command -v $PYTHON_BIN >/dev/null || (sudo apt-get update -q && \
sudo apt-get install -y -q $PYTHON_BIN ${PYTHON_BIN}-venv)); mkdir -p $REMOTE_DIR; \
tar -xzf ~/recnet-jax-code.tar.gz -C $REMOTE_DIR; cd $REMOTE_DIR; \
test -x .venv/bin/python || $PYTHON_BIN -m venv .venv; \
.venv/bin/pip install -q -r requirements.txt 'jax[tpu]==$JAX_TPU_VERSION'; \
.venv/bin/pip install -q --no-deps -e ."
if [[ -n "$DATA_SOURCE" ]]; then
  setup+="; mkdir -p $DATA_DIR; gcloud storage cp -r $(printf '%q' "${DATA_SOURCE%/}")/* $DATA_DIR/"
fi
install="$(quote_all "${gcloud_tpu[@]}" ssh "$TPU_NAME" --worker=all "${where[@]}") --command=${setup@Q}"

train_cmd="cd $REMOTE_DIR && RECNET_DISTRIBUTED=1 RECNET_HEARTBEAT_TIMEOUT_S=$HEARTBEAT_TIMEOUT_S \
.venv/bin/python -u -m recnet_jax.main $(quote_all "${flags[@]}")"
train="$(quote_all "${gcloud_tpu[@]}" ssh "$TPU_NAME" --worker=all "${where[@]}") --command=${train_cmd@Q}"

steps=("$create" "$pack" "$copy" "$install" "$train")
if ((dry_run)); then
  printf '%s\n' "${steps[@]}"
  exit 0
fi
for step in "${steps[@]}"; do
  echo "tpu_pod.sh: $step" >&2
  eval "$step"
done
