#!/usr/bin/env bash
# Every knowledge-transfer method of the project, each alone and combined with
# KD, trained on the same teacher and student and printed as one table
# (`nst table methods`, rows in configs/tables.yaml): KD, FitNet, AT, NST
# (linear / poly / Gaussian), SP, AB, RKD, PKT, CC, VID, FSP, FT and CRD.
#
# Full scale (a GPU machine; ResNet-1001 teacher, 400-epoch students):
#   scripts/benchmark_methods.sh --root data --gpus 0 [--dataset cifar100]
# Scaled down for a 2-core CPU (ResNet-20 teacher, quarter-width students,
# 3 epochs on 2,560 images of the genuine CIFAR-10 subset in ../shared/data):
#   scripts/benchmark_methods.sh --quick
# The data set defaults to cifar10 (pass --dataset once per column wanted);
# any other option goes to `nst table` (see `nst table --help`).  Finished rows
# are kept and interrupted rows resumed when the script runs again; the table
# is also written to <out-root>/methods.md and methods.json.
set -euo pipefail
cd "$(dirname "$0")/.."
NST=".venv/bin/nst"; [ -x "$NST" ] || NST="nst"

args=("$@")
root=""
prev=""
for a in "$@"; do [ "$prev" = "--root" ] && root="$a"; prev="$a"; done
if [[ " $* " == *" --quick "* ]] && [ -z "$root" ]; then
  root="data"
  [ -d ../shared/data/cifar-10-batches-py ] && root="../shared/data"
  args+=(--root "$root")
fi
if [[ " $* " != *" --dataset "* ]]; then
  args+=(--dataset cifar10)
fi
start=$(date +%s)
"$NST" table methods "${args[@]}"
echo "benchmark_methods: finished in $(( $(date +%s) - start )) s"
