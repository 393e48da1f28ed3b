"""Error curves of runs: their per-epoch histories read, averaged over seeds and plotted.

:func:`read_history` reads a run folder's ``log.json`` (the per-epoch records
the trainer writes); :func:`plot_error_curves` draws the paper's Figs. 3 and 4:
top-1 error against epoch for several runs on one axis, train error dashed and
test error solid, one colour per run; :func:`mean_curves` /
:func:`plot_mean_curves` do the same for the mean over seeds, with a band.
Used after every run (the trainer's ``curves.png``), by ``nst table`` and
``nst demo``, and by the ``nst curves`` command (:mod:`tools.curves`).
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nst.errors import NSTError  # noqa: E402
from nst.io import atomic_path, read_json  # noqa: E402

__all__ = ["finish_error_plot", "mean_curves", "plot_error_curves", "plot_mean_curves",
           "read_history", "seed_histories"]


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




def seed_histories(rows, runs, teacher=True):
    """``{method: [history per seed]}`` of a table's finished rows, for
    :func:`plot_mean_curves`.

    ``rows``: the table's rows; ``runs``: ``{seed: {row key: results}}`` (each
    results dict names its ``log``).  Seeds are taken in sorted order; the teacher
    row, trained once for all seeds, gives one history (none with
    ``teacher=False``); a row with no finished run is left out.
    """
    groups = {}
    for row in rows:
        if row.get("role") == "teacher" and not teacher:
            continue
        logs = [r[row["key"]]["log"] for _, r in sorted(runs.items())
                if r.get(row["key"]) and os.path.exists(r[row["key"]].get("log", ""))]
        if row.get("role") == "teacher":
            logs = logs[:1]
        if logs:
            groups[row["method"]] = [read_history(os.path.dirname(p)) for p in logs]
    return groups


def plot_error_curves(runs, path, title=None, metric="top1_err", size=(7.0, 4.5), dpi=100):
    """Save train (dashed) and test (solid) error curves of several runs as PNG.

    Parameters
    ----------
    runs : dict
        ``{label: history}`` where ``history`` is a run's ``log.json`` (a list
        of per-epoch records with ``epoch``, ``train_<metric>`` and, on epochs
        that were evaluated, ``test_<metric>``).
    path : str
        Output PNG, written atomically.
    """
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    finals = []  # (final test error, epoch, colour): labelled after the axes are set
    for index, (label, history) in enumerate(runs.items()):
        colour = colours[index % len(colours)]
        train = [(r["epoch"], r["train_" + metric]) for r in history if "train_" + metric in r]
        test = [(r["epoch"], r["test_" + metric]) for r in history if "test_" + metric in r]
        if train:
            ax.plot(*zip(*train), linestyle="--", color=colour, linewidth=1.2, alpha=0.8)
        if test:
            ax.plot(*zip(*test), linestyle="-", color=colour, linewidth=2.0, label=label)
            finals.append((test[-1][1], test[-1][0], colour))
        elif train:
            ax.plot([], [], linestyle="-", color=colour, label=label)
    from matplotlib.lines import Line2D
    finish_error_plot(fig, ax, finals, metric, title or "train (dashed) and test (solid) error",
                      [Line2D([], [], color="0.3", linestyle="--"), Line2D([], [], color="0.3")],
                      ["train (dashed)", "test (solid)"], path)
    return path


def finish_error_plot(fig, ax, finals, metric, title, extra_handles, extra_labels, path):
    """Axes, labels, final values and legend (the runs' entries plus
    ``extra_handles``/``extra_labels``) of an error-curve figure; saves it to
    ``path`` atomically as PNG and closes it."""
    from matplotlib.ticker import MaxNLocator
    handles, labels = ax.get_legend_handles_labels()
    handles += list(extra_handles)
    labels += list(extra_labels)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(x=0.08)
    _label_final_values(ax, finals)
    ax.set_xlabel("epoch")
    ax.set_ylabel("%s error (%%)" % metric.replace("_err", "").replace("top", "top-"))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(handles, labels, fontsize=8, loc="best", framealpha=0.85)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _label_final_values(ax, finals):
    """Write each run's final test error at the end of its curve, spread apart
    vertically so that close values do not overlap."""
    if not finals:
        return
    low, high = ax.get_ylim()
    gap = 0.045 * (high - low)
    placed = []
    for value, epoch, colour in sorted(finals):
        y = value if not placed else max(value, placed[-1] + gap)
        placed.append(y)
        ax.annotate("%.2f" % value, xy=(epoch, value), xytext=(4, y),
                    textcoords=("offset points", "data"), fontsize=8, color=colour,
                    va="center", annotation_clip=False)


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
    import numpy as np

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
