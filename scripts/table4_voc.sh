#!/usr/bin/env bash
# Table 4 of Huang & Wang (2017): Faster R-CNN on PASCAL VOC 2007 test, one row per
# ImageNet Inception-BN student (Baseline, KD, FitNet, AT, NST*, KD+NST*), everything
# else in the detector identical (configs/voc/faster_rcnn.yaml, GluonCV's
# faster_rcnn_resnet50_v1b_voc recipe with an Inception-BN backbone split at 4b).
#
# Full scale (8 GPUs; VOC2007+2012 in GluonCV's layout; the ImageNet students of
# Table 3 in runs/imagenet/<row>/student.params):
#   scripts/table4_voc.sh --voc-root ~/.mxnet/datasets/voc --gpus 0,1,2,3,4,5,6,7
# Pipeline check on a 2-core CPU (a few minutes): a tiny VOC-format dataset of
# CIFAR-10 images (data/tiny_voc), quarter-width backbones, small images, and
# stand-in backbones where the ImageNet students do not exist.  Its numbers are
# NOT a reproduction of Table 4:
#   scripts/table4_voc.sh --quick
# Any other option goes to `nst detect table4` (see `nst detect table4 --help`),
# e.g. --rows nst kd_nst, --set epochs=1, --imagenet-root DIR, --out-root DIR.
# Finished rows are kept and interrupted rows resumed when the script runs again
# (--fresh starts over); it ends by printing the per-class table with the paper's
# numbers beside the measured ones (also written to <out-root>/table4.md).
set -euo pipefail
cd "$(dirname "$0")/.."
NST=".venv/bin/nst"; [ -x "$NST" ] || NST="nst"
exec "$NST" detect table4 "$@"
