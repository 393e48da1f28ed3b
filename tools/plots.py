"""Plots a person would rather look at than read.

:func:`plot_error_curves` draws the paper's Figs. 3 and 4: top-1 error against
epoch for several runs on one axis, train error dashed and test error solid,
one colour per run.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nst.io import atomic_path  # noqa: E402


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
