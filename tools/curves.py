"""``nst curves``: train (dashed) and test (solid) error of several runs on one plot (Figs. 3, 4).

Reads each run folder's ``log.json`` (the per-epoch records ``nst train``
writes) and draws them with :func:`train.report.curves.plot_error_curves`, one
colour per run.  The JSON beside the PNG holds, per run, the last epoch's train and
test error, the best test error and its epoch, and the run's
``results.json`` when it has finished.  ``--metric top5_err`` needs runs on
more than 10 classes (top-5 is recorded only then).

    nst curves runs/cifar10/student runs/cifar10/nst_poly --labels Student NST -o fig3.png

A run folder trained with several seeds (``nst table NAME --seeds 0,1,2``
writes ``<row>/seed0``, ``<row>/seed1``, ...) is drawn as the **mean over its
seeds** (:func:`train.report.curves.mean_curves`), train dashed and test solid
as before, with a shaded band of ± one standard deviation of the test error across seeds (the
whole min-max range with two seeds); the JSON then also holds the per-epoch
mean and std and each seed's final error.

    nst curves runs/cifar10_subset/student runs/cifar10_subset/kd_nst -o fig3.png
"""

import os

from nst.errors import NSTError
from nst.io import read_json, write_json

from train.report.curves import plot_error_curves, plot_mean_curves, read_history

__all__ = ["summarise", "seed_runs", "make_curves_figure", "add_arguments", "run"]

METRICS = ("top1_err", "top5_err")


def summarise(history, metric="top1_err"):
    """Last train / test error, best test error and its epoch for ``metric``."""
    train = [(r["epoch"], r["train_" + metric]) for r in history
             if r.get("train_" + metric) is not None]
    test = [(r["epoch"], r["test_" + metric]) for r in history
            if r.get("test_" + metric) is not None]
    best = min(test, key=lambda item: item[1]) if test else None
    return {"epochs": max(r["epoch"] for r in history),
            "final_train": train[-1][1] if train else None,
            "final_test": test[-1][1] if test else None,
            "best_test": best[1] if best else None,
            "best_test_epoch": best[0] if best else None}


def seed_runs(run):
    """The ``seed<N>`` sub-folders of a row folder (sorted by N), or ``[]``."""
    if not os.path.isdir(run):
        return []
    found = []
    for name in os.listdir(run):
        path = os.path.join(run, name)
        if name.startswith("seed") and name[4:].isdigit() and os.path.isdir(path):
            found.append((int(name[4:]), path))
    return [path for _, path in sorted(found)]


def _default_labels(runs):
    names = [os.path.basename(os.path.normpath(r)) for r in runs]
    if len(set(names)) == len(names):
        return names
    return [os.path.normpath(r) for r in runs]


def make_curves_figure(runs, out_png, labels=None, metric="top1_err", title=None,
                       json_path=None, log=print):
    """Write the curves PNG and its JSON; returns the JSON dict."""
    if metric not in METRICS:
        raise NSTError("unknown metric %r; choose %s" % (metric, " or ".join(METRICS)))
    if not runs:
        raise NSTError("no run folders given; e.g. nst curves runs/demo/student "
                       "runs/demo/nst_poly -o curves.png")
    labels = list(labels) if labels else _default_labels(runs)
    if len(labels) != len(runs):
        raise NSTError("%d labels for %d runs; give one label per run" % (len(labels), len(runs)))
    if len(set(labels)) != len(labels):
        raise NSTError("labels must be distinct, got %s" % ", ".join(labels))
    if any(seed_runs(run) for run in runs):
        return _make_mean_figure(runs, labels, out_png, metric, title, json_path, log)
    histories, summary = {}, []
    for run, label in zip(runs, labels):
        history = read_history(run)
        item = summarise(history, metric)
        if item["final_train"] is None and item["final_test"] is None:
            hint = (" (top-5 error is recorded only for data sets with more than 10 classes)"
                    if metric == "top5_err" else "")
            raise NSTError("%s/log.json has no %s values%s; choose another --metric"
                           % (run, metric, hint))
        results = os.path.join(run, "results.json")
        item.update({"label": label, "run": run,
                     "results": read_json(results, "results file", "delete it and rerun the "
                                          "run") if os.path.isfile(results) else None})
        histories[label] = history
        summary.append(item)
    plot_error_curves(histories, out_png, title=title, metric=metric)
    result = {"figure": out_png, "metric": metric, "runs": summary}
    json_path = json_path or os.path.splitext(out_png)[0] + ".json"
    write_json(json_path, result)
    for item in summary:
        log("%-24s epochs %3d  final train %s  final test %s  best test %s (epoch %s)"
            % (item["label"], item["epochs"], _fmt(item["final_train"]),
               _fmt(item["final_test"]), _fmt(item["best_test"]), item["best_test_epoch"]))
    log("written: %s, %s" % (out_png, json_path))
    return result


def _make_mean_figure(runs, labels, out_png, metric, title, json_path, log):
    """:func:`make_curves_figure` for row folders with ``seed<N>/`` runs: mean and band."""
    groups, summary = {}, []
    for run, label in zip(runs, labels):
        folders = seed_runs(run) or [run]
        groups[label] = [read_history(folder) for folder in folders]
        finals = [summarise(h, metric)["final_test"] for h in groups[label]]
        summary.append({"label": label, "run": run, "seed_runs": folders,
                        "final_test_per_seed": finals})
    curves = plot_mean_curves(groups, out_png, title=title, metric=metric)
    for item in summary:
        item["curves"] = curves[item["label"]]
        known = [v for v in item["final_test_per_seed"] if v is not None]
        item["final_test_mean"] = sum(known) / len(known) if known else None
    result = {"figure": out_png, "metric": metric, "mean_over_seeds": True, "runs": summary}
    json_path = json_path or os.path.splitext(out_png)[0] + ".json"
    write_json(json_path, result)
    for item in summary:
        log("%-24s %d seed(s)  final test mean %s  per seed %s"
            % (item["label"], len(item["seed_runs"]), _fmt(item["final_test_mean"]),
               ", ".join(_fmt(v) for v in item["final_test_per_seed"])))
    log("written: %s, %s" % (out_png, json_path))
    return result


def _fmt(value):
    return "—" if value is None else "%.2f" % value


def add_arguments(parser):
    parser.description = ("Train (dashed) and test (solid) error of several runs on one plot "
                          "(the paper's Figs. 3 and 4).")
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run folders with a log.json, or row folders of `nst table "
                             "--seeds` (seed0/, seed1/, ...: drawn as the mean with a band)")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="legend label per run (default: the folder names)")
    parser.add_argument("--metric", default="top1_err", choices=METRICS)
    parser.add_argument("--title", default=None)
    parser.add_argument("-o", "--out", default="curves.png", help="output PNG (curves.png)")
    parser.add_argument("--json", default=None, help="output JSON (default: OUT with .json)")


def run(args):
    make_curves_figure(args.runs, args.out, labels=args.labels, metric=args.metric,
                       title=args.title, json_path=args.json)
    return 0
