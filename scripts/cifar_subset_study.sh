#!/usr/bin/env bash
# The CIFAR-10 subset study: does transfer work at CPU scale?
#
# A pre-activation ResNet-20 teacher trained once (30 epochs), then the rows
# Student, KD, FitNet, AT, NST (linear), NST (poly), NST (Gaussian) and KD+NST
# (poly) on an Inception-BN-small student at 1/8 width (6 epochs), each for
# every seed; the same seed gives every row the same initialisation and data
# order, so rows are compared seed by seed.  Rows and settings are data: the
# table `cifar10_subset` in configs/tables.yaml and configs/study/cifar10_subset/.
# Training is `nst table cifar10_subset` (one process per run); finished runs
# are kept and an interrupted study resumes where it stopped when the same
# command runs again.
#
#   scripts/cifar_subset_study.sh [--root DIR] [--seeds 0,1,2] [--gpus IDS]
#       [--jobs N] [--out-root DIR] [--results DIR] [--quick]
#   scripts/cifar_subset_study.sh --verify ROW SEED [--root DIR] [--retrain-teacher]
#
# --root     CIFAR-10 folder holding cifar-10-batches-py/ (default ../shared/data,
#            the genuine 5,170 / 1,017-image subset; any CIFAR-10 root works)
# --seeds    seeds (default 0,1,2)
# --jobs     runs trained side by side (default: usable cores / OMP_NUM_THREADS;
#            1 with --gpus)
# --results  where the record goes (default docs/results): cifar10_subset.json,
#            cifar10_subset.md, cifar10_subset_curves.png, cifar10_subset_tsne.png
# --verify ROW SEED  retrain one row (key or name, e.g. kd_nst or "KD+NST (poly)")
#            for one seed, with the recorded teacher (runs/cifar10_subset/teacher)
#            when present, else a retrained one; prints one JSON line
#            {"row", "seed", "recorded", "measured"} and exits 0 when they agree
#            within 0.5 points.
#
# Each run uses OMP_NUM_THREADS=1 unless you set it: the recorded study ran
# single-threaded runs two at a time, and a run is bitwise reproducible only at
# the same operator thread count (docs/results/cifar10_subset.json: omp_threads).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=".venv/bin/python"; [ -x "$PY" ] || PY="python3"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

action="train"; row=""; seed=""; jobs=""; gpus=""; root=""
common=(); results=(); verify_opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --verify)
      [ $# -ge 3 ] || { echo "cifar_subset_study: error: --verify needs ROW SEED, e.g. --verify kd_nst 0" >&2; exit 2; }
      action="verify"; row="$2"; seed="$3"; shift 3 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --gpus) gpus="$2"; common+=(--gpus "$2"); shift 2 ;;
    --root) root="$2"; common+=(--root "$2"); shift 2 ;;
    --seeds|--out-root) common+=("$1" "$2"); shift 2 ;;
    --results) results=(--results "$2"); shift 2 ;;
    --results-json|--verify-root) verify_opts+=("$1" "$2"); shift 2 ;;
    --retrain-teacher) verify_opts+=("$1"); shift ;;
    --quick) common+=(--quick); shift ;;
    -h|--help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cifar_subset_study: error: unknown option $1; see scripts/cifar_subset_study.sh --help" >&2; exit 2 ;;
  esac
done
check_root="${root:-../shared/data}"
if [ ! -f "$check_root/cifar-10-batches-py/test_batch" ]; then
  echo "cifar_subset_study: error: no CIFAR-10 in $check_root (cifar-10-batches-py/); pass --root DIR, or download it with: nst data cifar10 --root data" >&2
  exit 2
fi
if [ "$action" = "verify" ]; then
  exec "$PY" -m tools.study verify "$row" "$seed" "${common[@]}" "${verify_opts[@]}"
fi
if [ -z "$jobs" ]; then
  if [ -n "$gpus" ]; then jobs=1; else
    cores=$("$PY" -c "from nst.runtime import usable_cores; print(usable_cores())")
    jobs=$(( cores / OMP_NUM_THREADS )); [ "$jobs" -ge 1 ] || jobs=1
  fi
fi
start=$(date +%s)
echo "cifar_subset_study: $jobs run(s) at a time, OMP_NUM_THREADS=$OMP_NUM_THREADS per run"
"$PY" -m tools.study train --jobs "$jobs" "${common[@]}"
"$PY" -m tools.study record "${common[@]}" "${results[@]}"
echo "cifar_subset_study: finished in $(( $(date +%s) - start )) s"
