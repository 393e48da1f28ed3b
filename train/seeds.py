"""Several seeds of one table: parsing ``--seeds``, mean ± std and paired differences.

A seed fixes a student's initialisation and the order of its training data
(``seed`` of the config: :class:`train.trainer.Distiller` seeds MXNet and
NumPy with it before the student is initialised, and the training batches are
shuffled from it).  Every row of a table trained with the same seed therefore
starts from the same weights and sees the same batches, and rows can be
compared seed by seed: the *paired* difference of row ``r`` to the baseline
``b`` (the student trained alone) on seed ``s`` is ``d_s = e_r,s - e_b,s``.

Summary of ``n`` values ``x_1..x_n`` (errors in %):

    mean = sum x_s / n,    std = sqrt( sum (x_s - mean)^2 / (n - 1) )   (sample std, ddof 1)

Paired difference: the mean of the ``d_s`` and its 95% confidence interval
from Student's t-distribution with ``n - 1`` degrees of freedom,

    mean(d) ± t_{0.975, n-1} * std(d) / sqrt(n)

(``scipy.stats.t.ppf``).  With one seed the std and the interval are
undefined (``None``).
"""

import math

from nst.errors import NSTError

__all__ = ["parse_seeds", "summarise", "paired_difference", "aggregate_rows"]


def parse_seeds(text):
    """``"0,1,2"`` or ``"0-4"`` -> ``[0, 1, 2]`` / ``[0, 1, 2, 3, 4]`` (distinct, in order)."""
    seeds = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                low, high = part.split("-", 1)
                values = list(range(int(low), int(high) + 1))
            else:
                values = [int(part)]
        except ValueError:
            values = None
        if not values or any(v < 0 for v in values):
            raise NSTError("--seeds %r: give non-negative integers separated by commas, "
                           "e.g. --seeds 0,1,2 (or a range, --seeds 0-2)" % text)
        seeds += [v for v in values if v not in seeds]
    if not seeds:
        raise NSTError("--seeds %r names no seed; e.g. --seeds 0,1,2" % text)
    return seeds


def summarise(values):
    """``{"mean", "std", "n"}`` of a list of numbers (sample std, ``None`` for n < 2)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n}


def paired_difference(values, baseline, confidence=0.95):
    """Mean and ``confidence`` interval of the per-seed differences ``values - baseline``.

    ``values`` and ``baseline`` map seed -> number; only seeds present in both
    count.  Returns ``{"mean", "ci95": [low, high] or None, "n", "std"}``.
    """
    from scipy import stats

    common = [s for s in values if s in baseline]
    diffs = [float(values[s]) - float(baseline[s]) for s in common]
    summary = summarise(diffs)
    ci = None
    if summary["n"] > 1:
        half = stats.t.ppf(0.5 + confidence / 2.0, summary["n"] - 1) * summary["std"] \
            / math.sqrt(summary["n"])
        ci = [summary["mean"] - half, summary["mean"] + half]
    return {"mean": summary["mean"], "ci95": ci, "n": summary["n"], "std": summary["std"],
            "seeds": [str(s) for s in common]}


def aggregate_rows(rows, by_seed, metric="test_top1_err", baseline="student"):
    """Per-row summary over seeds of one dataset.

    ``rows``: the table's rows (dicts with ``key``, ``method``, optional
    ``role``); ``by_seed``: seed -> {row key: results dict}.  A teacher row
    (``role: teacher``) is trained once and is summarised from any seed's
    results.  Returns a list of ``{"key", "name", "seeds": {seed: value},
    "mean", "std", "n", "diff_vs_student": {...} or None}`` in table order
    (the baseline's own difference is 0 with the interval [0, 0]; the teacher's
    is None).
    """
    base_values = {str(s): r[baseline][metric] for s, r in by_seed.items()
                   if r.get(baseline) and r[baseline].get(metric) is not None}
    out = []
    for row in rows:
        values = {}
        for seed, results in by_seed.items():
            result = results.get(row["key"])
            if result is not None and result.get(metric) is not None:
                values[str(seed)] = float(result[metric])
        if row.get("role") == "teacher" and values:
            values = {"-": next(iter(values.values()))}
        item = {"key": row["key"], "name": row["method"], "seeds": values}
        item.update(summarise(list(values.values())))
        item["diff_vs_student"] = None
        if row.get("role") != "teacher" and base_values and values:  # the baseline: 0 ± 0
            item["diff_vs_student"] = paired_difference(values, base_values)
        out.append(item)
    return out
