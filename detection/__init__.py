"""Faster R-CNN on PASCAL VOC with distilled Inception-BN backbones (Sec. 5.3, Table 4).

Each backbone is initialised from one distilled ImageNet student.

- :mod:`detection.config`: the detection config schema (``configs/voc/``);
- :mod:`detection.model`: GluonCV's ``FasterRCNN`` around ``net.split_at('4b')``;
- :mod:`detection.data`: VOC datasets and loaders (GluonCV's recipe, checked inputs);
- :mod:`detection.train`: training, checkpoints/resume, logs, VOC07 evaluation;
- :mod:`detection.table4`: every row of Table 4 and the table beside the paper's;
- :mod:`detection.tiny_voc`, :mod:`detection.quick_backbone`: the CPU pipeline check;
- :mod:`detection.cli`: ``nst detect train|eval|table4|make-tiny-voc``.

Scoring detections files: ``nst voc-eval`` (:mod:`tools.voc_eval`).
"""

import nst.compat  # noqa: F401  -- NumPy aliases MXNet needs, before any mxnet import
