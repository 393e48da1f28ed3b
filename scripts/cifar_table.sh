#!/usr/bin/env bash
# Shared body of scripts/table1_cifar.sh and scripts/table2_cifar.sh:
#   scripts/cifar_table.sh TABLE [nst table options...]
# In --quick mode it defaults to the genuine CIFAR-10 subset in ../shared/data
# when present, and to the datasets actually on disk.
table="$1"; shift
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
        echo "$table --quick: no $root/$folder, skipping $ds (nst data $ds --root $root)"; fi
    done
  fi
fi
exec "$NST" table "$table" "${args[@]}"
