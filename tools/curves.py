"""``nst curves``: train (dashed) and test (solid) error of several runs on one plot (Figs. 3, 4).

Reads each run folder's ``log.json`` (the per-epoch records ``nst train``
writes) and draws them with :func:`tools.plots.plot_error_curves`, one colour
per run.  The JSON beside the PNG holds, per run, the last epoch's train and
test error, the best test error and its epoch, and the run's
``results.json`` when it has finished.  ``--metric top5_err`` needs runs on
more than 10 classes (top-5 is recorded only then).

    nst curves runs/cifar10/student runs/cifar10/nst_poly --labels Student NST -o fig3.png

A run folder trained with several seeds (``nst table NAME --seeds 0,1,2``
writes ``<row>/seed0``, ``<row>/seed1``, ...) is drawn as the **mean over its
seeds** (:func:`mean_curves`), train dashed and test solid as before, with a
shaded band of ± one standard deviation of the test error across seeds (the
whole min-max range with two seeds); the JSON then also holds the per-epoch
mean and std and each seed's final error.

    nst curves runs/cifar10_subset/student runs/cifar10_subset/kd_nst -o fig3.png
"""

import os

from nst.errors import NSTError
from nst.io import read_json, write_json

from .plots import plot_error_curves

__all__ = ["read_history", "summarise", "seed_runs", "mean_curves", "plot_mean_curves",
           "make_curves_figure", "add_arguments", "run"]

METRICS = ("top1_err", "top5_err")


def read_history(run):
    """The per-epoch records of a run folder's ``log.json``."""
    if not os.path.isdir(run):
        raise NSTError("run folder %s does not exist; give folders written by `nst train` "
                       "(e.g. runs/demo/nst_poly)" % run)
    path = os.path.join(run, "log.json")
    if not os.path.isfile(path):
        raise NSTError("run folder %s has no log.json: it has not finished an epoch yet, or it "
                       "is not a run folder of `nst train`; train it (nst train CONFIG) or "
                       "leave it out" % run)
    history = read_json(path, "training log", "the run folder is damaged: retrain the run "
                        "or leave it out")
    if not isinstance(history, list) or not all(isinstance(r, dict) and "epoch" in r
                                                for r in history):
        raise NSTError("%s is not a list of per-epoch records with an `epoch`; it was not "
                       "written by `nst train`" % path)
    if not history:
        raise NSTError("%s is empty: the run has not finished an epoch yet" % path)
    return history


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


def mean_curves(histories, metric="top1_err"):
    """Per-epoch mean and sample std over seeds of the train and test ``metric``.

    ``histories``: one ``log.json`` list per seed.  An epoch counts where every
    seed has the value (runs cut short give the common prefix).  Returns
    ``{"epochs", "train_mean", "train_std", "test_epochs", "test_mean",
    "test_std", "test_min", "test_max", "seeds"}`` (std 0 for one seed).
    """
    import numpy as np

    def table(kind):
        per_seed = [{r["epoch"]: r[kind + "_" + metric] for r in h
                     if r.get(kind + "_" + metric) is not None} for h in histories]
        epochs = sorted(set.intersection(*[set(p) for p in per_seed])) if per_seed else []
        values = np.array([[p[e] for e in epochs] for p in per_seed], dtype=float)
        return epochs, values

    out = {"seeds": len(histories)}
    for kind in ("train", "test"):
        epochs, values = table(kind)
        ddof = 1 if len(histories) > 1 else 0
        out[kind + "_epochs"] = epochs
        out[kind + "_mean"] = values.mean(axis=0).tolist() if epochs else []
        out[kind + "_std"] = values.std(axis=0, ddof=ddof).tolist() if epochs else []
        if kind == "test":
            out["test_min"] = values.min(axis=0).tolist() if epochs else []
            out["test_max"] = values.max(axis=0).tolist() if epochs else []
    out["epochs"] = out.pop("train_epochs")
    return out


def plot_mean_curves(groups, path, title=None, metric="top1_err", size=(7.0, 4.5), dpi=100):
    """Fig. 3 over seeds: per group, mean train (dashed) and test (solid) error over its
    seeds, and a band of ± one std of the test error (min-max with two seeds).

    ``groups``: ``{label: [history per seed]}``; returns ``{label: mean_curves(...)}``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from .plots import finish_error_plot

    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    finals, summary = [], {}
    for index, (label, histories) in enumerate(groups.items()):
        colour = colours[index % len(colours)]
        curves = mean_curves(histories, metric)
        summary[label] = curves
        if curves["epochs"]:
            ax.plot(curves["epochs"], curves["train_mean"], linestyle="--", color=colour,
                    linewidth=1.2, alpha=0.8)
        if curves["test_epochs"]:
            mean = np.array(curves["test_mean"])
            if len(histories) == 2:
                low, high = np.array(curves["test_min"]), np.array(curves["test_max"])
            else:
                std = np.array(curves["test_std"])
                low, high = mean - std, mean + std
            ax.fill_between(curves["test_epochs"], low, high, color=colour, alpha=0.18,
                            linewidth=0)
            ax.plot(curves["test_epochs"], mean, linestyle="-", color=colour, linewidth=2.0,
                    label="%s (%d seed%s)" % (label, len(histories),
                                              "" if len(histories) == 1 else "s"))
            finals.append((mean[-1], curves["test_epochs"][-1], colour))
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    finish_error_plot(fig, ax, finals, metric,
                      title or "mean over seeds: train (dashed) and test (solid) error",
                      [Line2D([], [], color="0.3", linestyle="--"), Line2D([], [], color="0.3"),
                       Patch(color="0.3", alpha=0.18)],
                      ["train, mean (dashed)", "test, mean (solid)", "test ± 1 std over seeds"],
                      path)
    return summary


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
