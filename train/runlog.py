"""A run's per-epoch log: ``log.json`` (a list of records) and ``log.csv``.

Both are rewritten atomically after every epoch, so a run killed at any
instant leaves a complete log; on resume, records past the checkpoint's epoch
are dropped before training continues, so every epoch is logged exactly once.
"""

import json
import os

from nst.io import write_json, write_text


def log_path(out_dir, ext="json"):
    return os.path.join(out_dir, "log." + ext)


def read_log(out_dir):
    """The records of ``<out_dir>/log.json``; [] when absent or unreadable."""
    path = log_path(out_dir)
    if not os.path.exists(path):
        return []
    try:
        with open(path, "r", encoding="utf-8") as handle:
            records = json.load(handle)
    except (OSError, ValueError):
        return []
    return records if isinstance(records, list) else []


def write_log(out_dir, history):
    """Write ``log.json`` and ``log.csv`` (one column per key seen in any record)."""
    write_json(log_path(out_dir), history, "log-write")
    keys = []
    for record in history:
        keys.extend(k for k in record if k not in keys)
    lines = [",".join(keys)]
    for record in history:
        lines.append(",".join(_csv_cell(record.get(k)) for k in keys))
    write_text(log_path(out_dir, "csv"), "\n".join(lines) + "\n", "log-write")


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "%.6g" % value
    return str(value)
