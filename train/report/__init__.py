"""Reports of finished runs: the paper's tables beside the measured numbers, and error curves.

- :mod:`~train.report.tables`: the tables' definitions (``configs/tables.yaml``,
  ``configs/voc/table4.yaml``) and their Markdown rendering, published beside
  measured;
- :mod:`~train.report.curves`: runs' per-epoch histories read, averaged over
  seeds and plotted (the paper's Figs. 3 and 4).

Below the trainer, ``nst table``, ``nst detect table4`` and the tools, which all
render through these; it imports nothing of them.
"""
