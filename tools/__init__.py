"""The command-line tools on top: the demo, figures, tables, hints, features, export, VOC mAP.

Each module is one ``nst`` command (plus :mod:`tools.features`, the
visualisation tools' shared helpers).  They may import ``symbols`` and
``train``, never ``detection``; :mod:`tools.voc_eval` is also a helper the
detector uses."""

import nst.compat  # noqa: F401  -- NumPy aliases MXNet needs, before any mxnet import
