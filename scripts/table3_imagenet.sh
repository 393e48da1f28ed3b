#!/usr/bin/env bash
# Table 3 of Huang & Wang (2017): ImageNet top-1 / top-5 validation error
# (single 224x224 centre crop) of the Inception-BN student trained alone and
# with KD, FitNet, AT, NST*, KD+FitNet, KD+AT and KD+NST* from a pre-activation
# ResNet-101 teacher: by default the authors' pretrained checkpoint
# (configs/imagenet/distill.yaml: models/resnet-101-{symbol.json,0000.params});
# --teacher gluoncv uses GluonCV's resnet101_v2, --teacher own trains
# configs/imagenet/teacher.yaml first (--quick always trains a small one).
#
# Full scale (ImageNet packed by `nst pack` into data/imagenet; 8 GPUs, batch 512 =
# 64 per GPU, 100 epochs per row):
#   scripts/table3_imagenet.sh --root data/imagenet --gpus 0,1,2,3,4,5,6,7
# Scaled down for a 2-core CPU (a pipeline check, a few minutes): writes and
# packs a tiny ImageNet-style folder (12 classes of 40 JPEG crops of
# scikit-learn's two sample photographs, 25% held out for validation), then
# trains every row at 64x64 with quarter-width nets for a few epochs:
#   scripts/table3_imagenet.sh --quick
# Any other option goes to `nst table` (see `nst table --help`), e.g.
# --out-root, --kvstore.  Finished rows are kept and interrupted rows resumed
# when the script runs again; it ends by printing top-1 and top-5 error beside
# the paper's Table 3 (top-1 alone is also written to <out-root>/table3.md).
set -euo pipefail
cd "$(dirname "$0")/.."
NST=".venv/bin/nst"; [ -x "$NST" ] || NST="nst"
PY=".venv/bin/python"; [ -x "$PY" ] || PY="python3"

args=("$@")
quick=0; root=""; out_root=""; prev=""
for a in "$@"; do
  [ "$a" = "--quick" ] && quick=1
  [ "$prev" = "--root" ] && root="$a"
  [ "$prev" = "--out-root" ] && out_root="$a"
  prev="$a"
done
if [ -z "$out_root" ]; then
  out_root=$([ $quick = 1 ] && echo runs/quick || echo runs)
fi

if [ $quick = 1 ] && [ -z "$root" ]; then
  tiny="$out_root/imagenet_tiny"
  root="$tiny/data"
  if [ ! -f "$root/val.idx" ] || [ ! -f "$root/classes.txt" ]; then
    echo "table3 --quick: writing a tiny ImageNet-style folder to $tiny/images and packing it"
    "$PY" -c "from train.data.pack import make_tiny_imagenet; make_tiny_imagenet('$tiny/images', classes=12, per_class=40, size=64, seed=0, source='photos')"
    "$PY" -m train.data.pack "$tiny/images" "$root" --val-fraction 0.25 --resize 72 --threads 2 --no-progress
  fi
  args+=(--root "$root")
fi

exec "$NST" table table3 "${args[@]}"
