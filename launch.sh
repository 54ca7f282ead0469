#!/usr/bin/env bash
# Multi-process / multi-GPU / multi-node pretraining through the DeepSpeed launcher.
#
#   ./launch.sh --config configs/X.yaml [--num_gpus N] [--hostfile FILE] [--master_addr A] [--master_port P]
#               [-- extra ernie-cmtl pretrain arguments]
#   ./launch.sh --build-data --config configs/X.yaml --hostfile FILE [-- extra ernie-cmtl build-data arguments]
#
# One process per GPU (or, on a machine without GPUs, N CPU processes over gloo). Every rank runs
# `ernie-cmtl pretrain --config X --set train.engine=deepspeed ...`. With --build-data: the tokenizer and
# corpus statistics here, then `ernie-cmtl build-data --shard K/N` on the K-th of the N hostfile nodes over
# ssh (logs: build-data.shard-K.log), then pretrain reads the N shards. Multi-node: docs/DISTRIBUTED.md.
set -euo pipefail

usage() {
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

config="" num_gpus="" hostfile="" master_addr="" master_port="" extra=() build_data=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build-data) build_data=1; shift ;;
    --config) config="$2"; shift 2 ;;
    --num_gpus|--num-gpus) num_gpus="$2"; shift 2 ;;
    --hostfile) hostfile="$2"; shift 2 ;;
    --master_addr) master_addr="$2"; shift 2 ;;
    --master_port) master_port="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "launch.sh: unknown argument '$1' (extra pretrain arguments go after --)" >&2; usage 2 ;;
  esac
done
[ -n "$config" ] || { echo "launch.sh: --config is required" >&2; usage 2; }
[ -f "$config" ] || { echo "launch.sh: config file not found: $config" >&2; exit 2; }
[ -z "$hostfile" ] || [ -f "$hostfile" ] || { echo "launch.sh: hostfile not found: $hostfile" >&2; exit 2; }

if [ -n "$build_data" ]; then
  [ -n "$hostfile" ] || { echo "launch.sh: --build-data needs --hostfile (one node per line: its shard)" >&2; exit 2; }
  python="$(command -v ernie-cmtl >/dev/null 2>&1 && dirname "$(command -v ernie-cmtl)")/python"
  [ -x "$python" ] || python=python3
  mapfile -t nodes < <(awk '!/^[[:space:]]*(#|$)/ {print $1}' "$hostfile")
  n=${#nodes[@]}
  [ "$n" -gt 0 ] || { echo "launch.sh: no nodes in $hostfile" >&2; exit 2; }
  # Global statistics once, here, into the shared cache; then one shard per node, all at once.
  "$python" -m ernie_cmtl.cli build-data --config "$config" --statistics-only --quiet "${extra[@]}"
  remote_args=$(printf '%q ' "${extra[@]}")
  pids=()
  for k in "${!nodes[@]}"; do
    ${ERNIE_CMTL_SSH:-ssh} "${nodes[$k]}" "cd $(printf %q "$PWD") && $(printf %q "$python") -m ernie_cmtl.cli \
build-data --config $(printf %q "$config") --shard $k/$n --quiet $remote_args" >"build-data.shard-$k.log" 2>&1 &
    pids+=($!)
  done
  failed=0
  for k in "${!pids[@]}"; do
    if ! wait "${pids[$k]}"; then
      echo "launch.sh: shard $k/$n on ${nodes[$k]} failed (build-data.shard-$k.log)" >&2
      failed=1
    fi
  done
  [ "$failed" = 0 ] && echo "launch.sh: $n shards built; pretrain reads them as one dataset per task"
  exit "$failed"
fi

command -v deepspeed >/dev/null 2>&1 || { echo "launch.sh: the 'deepspeed' launcher is not on PATH (pip install -e .)" >&2; exit 2; }
python="$(dirname "$(command -v deepspeed)")/python"  # the environment deepspeed (and ernie-cmtl) live in
[ -x "$python" ] || python=python3
launcher=(deepspeed --no_local_rank)  # ranks read LOCAL_RANK from the environment
if [ -n "$hostfile" ]; then
  launcher+=(--hostfile "$hostfile")
  [ -z "$num_gpus" ] || launcher+=(--num_gpus "$num_gpus")
else
  launcher+=(--num_gpus "${num_gpus:-1}")
fi
[ -z "$master_addr" ] || launcher+=(--master_addr "$master_addr")
launcher+=(--master_port "${master_port:-$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}")

if ! "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  # CPU ranks share the cores: one intra-op thread each, or the ranks oversubscribe (196 ms vs ~15 ms a step).
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi

exec "${launcher[@]}" --module ernie_cmtl.cli pretrain --config "$config" --set train.engine=deepspeed "${extra[@]}"
