"""Training: data, transfer losses, the trainer and its epoch loop, checkpoints, reports.

Layer above :mod:`symbols` (the networks) and below ``tools`` and ``detection``:
nothing here imports either.  Subpackages: :mod:`train.data` (where images come
from), :mod:`train.losses` (one transfer method per module), :mod:`train.report`
(tables and curves of finished runs)."""

import nst.compat  # noqa: F401  -- NumPy aliases MXNet needs, before any mxnet import
