#!/usr/bin/env bash
# N JAX processes on this machine, one multi-host run through jax.distributed on loopback.
#
#   launch/local_multiprocess.sh N [--devices_per_process=D] [recnet_jax.main flags...]
#   launch/local_multiprocess.sh 2 --devices_per_process=2 --config configs/demo.py --workdir runs/mh
#
# Every process is a real JAX process: the coordinator (process 0) listens on 127.0.0.1 at a free
# port, the CPU collectives are gloo (bound to 127.0.0.1 too), and each process has its own D fake
# CPU devices, so the mesh has N x D devices. This is how the multi-host logic (per-host data,
# global arrays, per-process checkpoint shards, fail-fast on a lost process) runs anywhere.
# Only loopback addresses are used, ever: nothing listens on a network interface.
#
# The flags after N (and --devices_per_process) go to `python -m recnet_jax.main` unchanged.
# Each output line is prefixed with its process index ("[1] ..."). The script waits for all
# processes, says how each one ended, and exits with the first failure's status (0 if all
# succeeded). SIGINT/SIGTERM are forwarded to every process (the trainer saves and exits).
#
# Environment (all optional):
#   DEVICES_PER_PROCESS  fake CPU devices per process (default 1; --devices_per_process wins)
#   HEARTBEAT_TIMEOUT_S  seconds without heartbeats after which a process counts as dead and the
#                        others are ended, naming it (default 20)
#   INIT_TIMEOUT_S       seconds for all processes to connect (default 120)
#   PORT                 coordinator port (default: a free one)
#   PYTHON               the interpreter (default: .venv/bin/python of the repo if present, else python3)
#   RECNET_MAIN          what PYTHON runs (default: "-m recnet_jax.main"; word-split)
set -uo pipefail

usage() {
  sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[[ $# -ge 1 && "$1" =~ ^[0-9]+$ && "$1" -ge 1 ]] || usage
num_processes=$1
shift
devices=${DEVICES_PER_PROCESS:-1}
if [[ $# -ge 1 && "$1" == --devices_per_process=* ]]; then
  devices=${1#--devices_per_process=}
  shift
fi
[[ "$devices" =~ ^[0-9]+$ && "$devices" -ge 1 ]] || {
  echo "launch: --devices_per_process / DEVICES_PER_PROCESS must be a positive integer, got '$devices'" >&2
  exit 2
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
read -r -a main_cmd <<< "${RECNET_MAIN:--m recnet_jax.main}"
port=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

echo "launch: $num_processes process(es) x $devices CPU device(s), coordinator 127.0.0.1:$port"
pids=()
for ((i = 0; i < num_processes; i++)); do
  env JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES="$devices" \
      JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" \
      RECNET_NUM_PROCESSES="$num_processes" RECNET_PROCESS_ID="$i" \
      RECNET_HEARTBEAT_TIMEOUT_S="${HEARTBEAT_TIMEOUT_S:-20}" \
      RECNET_INIT_TIMEOUT_S="${INIT_TIMEOUT_S:-120}" \
      PYTHONUNBUFFERED=1 \
      "$PYTHON" "${main_cmd[@]}" "$@" > >(sed -u "s/^/[$i] /") 2>&1 &
  pids[i]=$!
  echo "launch: process $i: pid ${pids[i]}"
done

forward() {
  echo "launch: got $1, forwarding it to every process" >&2
  kill -s "$1" "${pids[@]}" 2>/dev/null
}
trap 'forward TERM' TERM
trap 'forward INT' INT

status=0
running=("${pids[@]}")
while ((${#running[@]} > 0)); do
  finished=
  wait -n -p finished "${running[@]}"
  rc=$?
  if [[ -z "$finished" ]]; then
    continue  # interrupted by a trapped signal: keep waiting
  fi
  still=()
  for pid in "${running[@]}"; do
    [[ "$pid" != "$finished" ]] && still+=("$pid")
  done
  running=("${still[@]}")
  for ((i = 0; i < num_processes; i++)); do
    [[ "${pids[i]}" == "$finished" ]] && break
  done
  if ((rc == 0)); then
    echo "launch: process $i (pid $finished) finished"
  elif ((rc > 128)); then
    echo "launch: process $i (pid $finished) was killed by signal $(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))"
  else
    echo "launch: process $i (pid $finished) exited with status $rc"
  fi
  if ((rc != 0 && status == 0)); then
    status=$rc
  fi
done
wait  # the line prefixers
exit "$status"
