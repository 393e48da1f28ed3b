#!/usr/bin/env bash
# Table 1 of Huang & Wang (2017): CIFAR-10 and CIFAR-100 test error of the
# individual transfer methods: Student, KD, FitNet, AT, NST (linear, poly, Gaussian), Teacher.
#
# Full scale (a GPU machine; 400 epochs per row, teacher ResNet-1001 first):
#   scripts/table1_cifar.sh --root data --gpus 0
# Scaled down for a 2-core CPU (small teacher, quarter-width student, 3 epochs):
#   scripts/table1_cifar.sh --quick
# Any other option goes to `nst table` (see `nst table --help`), e.g.
# --dataset cifar10 to run one column.  Finished rows are kept and interrupted
# rows resumed when the script runs again; it ends by printing the table with
# the paper's numbers beside the measured ones (also written to
# <out-root>/table1.md).
exec "$(dirname "$0")/cifar_table.sh" table1 "$@"
