#!/usr/bin/env bash
# Table 2 of Huang & Wang (2017): CIFAR-10 and CIFAR-100 test error of the
# combined methods: KD+FitNet, KD+NST, KD+FitNet+NST.
#
# Full scale (a GPU machine; 400 epochs per row, teacher ResNet-1001 first):
#   scripts/table2_cifar.sh --root data --gpus 0
# Scaled down for a 2-core CPU (small teacher, quarter-width student, 3 epochs):
#   scripts/table2_cifar.sh --quick
# Any other option goes to `nst table` (see `nst table --help`), e.g.
# --dataset cifar10 to run one column.  Finished rows are kept and interrupted
# rows resumed when the script runs again; it ends by printing the table with
# the paper's numbers beside the measured ones (also written to
# <out-root>/table2.md).
set -euo pipefail
cd "$(dirname "$0")/.."
NST=".venv/bin/nst"; [ -x "$NST" ] || NST="nst"

args=("$@")
if [[ " $* " == *" --quick "* ]]; then
  # Quick mode defaults to the genuine CIFAR-10 subset in ../shared/data when
  # present, and to the datasets that are actually on disk.
  root=""
  prev=""
  for a in "$@"; do [ "$prev" = "--root" ] && root="$a"; prev="$a"; done
  if [ -z "$root" ]; then
    root="data"
    [ -d ../shared/data/cifar-10-batches-py ] && root="../shared/data"
    args+=(--root "$root")
  fi
  if [[ " $* " != *" --dataset "* ]]; then
    for ds in cifar10 cifar100; do
      folder=$([ $ds = cifar10 ] && echo cifar-10-batches-py || echo cifar-100-python)
      if [ -d "$root/$folder" ]; then args+=(--dataset "$ds"); else
        echo "table2 --quick: no $root/$folder, skipping $ds (nst data $ds --root $root)"; fi
    done
  fi
fi
exec "$NST" table table2 "${args[@]}"
