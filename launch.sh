#!/usr/bin/env bash
# Multi-process / multi-GPU / multi-node pretraining through the DeepSpeed launcher.
#
#   ./launch.sh --config configs/X.yaml [--num_gpus N] [--hostfile FILE] [--master_addr A] [--master_port P]
#               [-- extra ernie-cmtl pretrain arguments]
#
# One process per GPU (or, on a machine without GPUs, N CPU processes over gloo). Every rank runs
# `ernie-cmtl pretrain --config X --set train.engine=deepspeed ...`. Multi-node: docs/DISTRIBUTED.md.
set -euo pipefail

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

config="" num_gpus="" hostfile="" master_addr="" master_port="" extra=()
while [ $# -gt 0 ]; do
  case "$1" in
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
