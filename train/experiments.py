"""Run the rows of a paper table and print it beside the published numbers.

A table is data in ``configs/tables.yaml``: its rows (the config that trains
each one, the numbers the paper published for it) and the overrides of its
scaled-down ``--quick`` version.  :func:`run_table` trains the teacher row
first, then every other row reading that teacher's checkpoint; finished rows
(``results.json`` present) are kept, interrupted rows are resumed.
:func:`format_table` renders the Markdown table, measured next to the paper.

This is what ``scripts/table1_cifar.sh``, ``scripts/table2_cifar.sh`` and
``nst demo`` run (``nst table NAME``).
"""

import json
import os
import shutil
from pathlib import Path

import yaml

from nst.errors import NSTError
from nst.io import write_json, write_text
from train.config import read_config, set_values, validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
TABLES_FILE = CONFIG_DIR / "tables.yaml"


def load_tables(path=TABLES_FILE):
    if not os.path.isfile(path):
        raise NSTError("table definitions %s are missing; run from a checkout of the "
                       "project (pip install -e .)" % path)
    with open(path, "r", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def table_spec(name, path=TABLES_FILE):
    tables = load_tables(path)
    if name not in tables:
        raise NSTError("unknown table %r; known tables: %s" % (name, ", ".join(tables)))
    return tables[name]


def _ordered_rows(spec):
    rows = spec["rows"]
    return [r for r in rows if r.get("role") == "teacher"] + \
           [r for r in rows if r.get("role") != "teacher"]


def row_out(spec, out_root, dataset, row):
    layout = spec.get("layout", "{dataset}/{key}")
    return os.path.join(out_root, layout.format(dataset=dataset, key=row["key"]))


def row_config(spec, row, dataset, out_root, data_root=None, quick=False, overrides=None):
    """The validated config of one row, with its output folder and teacher path."""
    path = CONFIG_DIR / row["config"].format(dataset=dataset)
    raw = read_config(path)
    is_teacher = row.get("role") == "teacher"
    values = {"out": row_out(spec, out_root, dataset, row)}
    if data_root is not None:
        values["data.root"] = data_root
    if quick:
        q = spec.get("quick") or {}
        values.update(q.get("all") or {})
        for key, value in (q.get("teacher" if is_teacher else "students") or {}).items():
            if key.startswith("teacher.") and raw.get("teacher") is None:
                continue
            values[key] = value
        values.update(row.get("quick") or {})  # the row's own quick overrides
    if raw.get("teacher") is not None:
        teacher_row = next((r for r in spec["rows"] if r.get("role") == "teacher"), None)
        if teacher_row is not None:
            values["teacher.checkpoint"] = os.path.join(
                row_out(spec, out_root, dataset, teacher_row), "student.params")
    values.update(overrides or {})
    return validate_config(set_values(raw, values), source=str(path))


def run_table(name, dataset, out_root="runs", data_root=None, quick=False, contexts=None,
              kvstore=None, progress=True, fresh=False, overrides=None, log=print):
    """Train every row of table ``name`` on ``dataset``; returns {row key: results}."""
    from train.trainer import Distiller
    from train.devices import parse_contexts

    spec = table_spec(name)
    if dataset not in spec["datasets"]:
        raise NSTError("table %s is defined for %s, not %r"
                       % (name, ", ".join(spec["datasets"]), dataset))
    contexts = contexts or parse_contexts()
    results = {}
    rows = _ordered_rows(spec)
    for index, row in enumerate(rows):
        cfg = row_config(spec, row, dataset, out_root, data_root, quick, overrides)
        out = cfg["out"]
        if fresh and os.path.isdir(out):
            shutil.rmtree(out)
        done = os.path.join(out, "results.json")
        if os.path.exists(done):
            with open(done, "r", encoding="utf-8") as handle:
                results[row["key"]] = json.load(handle)
            log("[%d/%d] %s: already finished (%s)" % (index + 1, len(rows), row["method"], out))
            continue
        log("[%d/%d] %s: training %s -> %s" % (index + 1, len(rows), row["method"],
                                               cfg["student"]["network"], out))
        distiller = Distiller(cfg, contexts, kvstore=kvstore, progress=progress, log=log)
        result = distiller.fit(resume=True)
        if result is None:
            raise NSTError("interrupted while training %s; run the same command again to "
                           "resume" % row["method"])
        results[row["key"]] = result
    return results


def _fmt(value):
    return "—" if value is None else "%.2f" % value


QUICK_NOTE = ("> QUICK MODE: the measured numbers come from the scaled-down `--quick` runs "
              "(a few epochs, small networks; see `quick` in configs/tables.yaml). They check "
              "the pipeline and are not a reproduction of the paper's numbers.")


# the key of each row's published numbers, per metric
PAPER_KEYS = {"test_top1_err": "paper", "test_top5_err": "paper_top5"}
METRIC_NAMES = {"test_top1_err": "Top-1", "test_top5_err": "Top-5"}


def format_table(name, measured, datasets=None, metrics=None):
    """Markdown table of one paper table: paper, measured and difference.

    ``measured`` maps dataset -> {row key: results dict}; rows without results
    are marked "not run".  ``metrics`` default to the table's ``metrics``
    (``test_top1_err``, and ``test_top5_err`` for ImageNet); each row's
    published numbers are under ``paper`` (top-1) and ``paper_top5``.  A
    dataset for which the paper published nothing (the demo) gets the measured
    column only.
    """
    spec = table_spec(name)
    datasets = datasets or spec["datasets"]
    metrics = metrics or spec.get("metrics") or ["test_top1_err"]
    columns = [(ds, m) for ds in datasets for m in metrics]

    def paper_of(row, ds, metric):
        return (row.get(PAPER_KEYS[metric]) or {}).get(ds)

    has_paper = {c: any(paper_of(row, *c) is not None for row in spec["rows"]) for c in columns}
    head = ["Method", "Model"]
    for ds, metric in columns:
        label = ds if len(metrics) == 1 else "%s %s" % (METRIC_NAMES[metric], ds) \
            if len(datasets) > 1 else METRIC_NAMES[metric]
        head += ["%s paper" % label, "%s measured" % label, "Δ"] if has_paper[(ds, metric)] \
            else ["%s measured" % label]
    lines = ["**%s**" % spec["title"], "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for row in spec["rows"]:
        cells = [row["method"], row.get("model", "")]
        for ds, metric in columns:
            paper = paper_of(row, ds, metric)
            result = (measured.get(ds) or {}).get(row["key"])
            value = None if result is None else result.get(metric)
            shown = "not run" if result is None else _fmt(value)
            if not has_paper[(ds, metric)]:
                cells.append(shown)
                continue
            diff = None if paper is None or value is None else value - paper
            cells += [_fmt(paper), shown, "—" if diff is None else "%+.2f" % diff]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Source of the paper's numbers: %s." % spec.get("source", "")]
    return "\n".join(lines)


def write_table_outputs(name, measured, out_root, datasets=None, quick=False):
    """Write ``<out_root>/<name>.md`` and ``<name>.json`` and the joint curves PNG."""
    from tools.plots import plot_error_curves

    text = format_table(name, measured, datasets)
    if quick:
        text += "\n\n" + QUICK_NOTE
    write_text(os.path.join(out_root, name + ".md"), text + "\n")
    write_json(os.path.join(out_root, name + ".json"), measured)
    spec = table_spec(name)
    for ds, rows in measured.items():
        histories = {}
        for row in spec["rows"]:
            result = rows.get(row["key"])
            if result and os.path.exists(result.get("log", "")):
                with open(result["log"], "r", encoding="utf-8") as handle:
                    histories[row["method"]] = json.load(handle)
        if histories:
            plot_error_curves(histories, os.path.join(out_root, "%s_%s_curves.png" % (name, ds)),
                              title="%s on %s: train (dashed) and test (solid) error" % (name, ds))
    return text


# ------------------------------------------------------------------ nst table
def add_arguments(parser):
    parser.add_argument("table", help="table name in configs/tables.yaml: table1, table2, ...")
    parser.add_argument("--dataset", action="append", default=None,
                        help="dataset column(s) to run (default: all of the table's)")
    parser.add_argument("--root", default=None, help="data folder (overrides data.root)")
    parser.add_argument("--out-root", default=None,
                        help="where the runs go (default runs/, or runs/quick/ with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="scaled-down version that finishes on a 2-core CPU")
    parser.add_argument("--gpus", default=None, help="comma-separated GPU ids")
    parser.add_argument("--cpus", type=int, default=None, help="number of CPU contexts")
    parser.add_argument("--kvstore", default=None, help="device, nccl, local or dist_sync")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a value in every row's config")
    parser.add_argument("--no-progress", action="store_true")


def run(args):
    from train.config import parse_override
    from train.devices import parse_contexts

    spec = table_spec(args.table)
    datasets = args.dataset or spec["datasets"]
    out_root = args.out_root or ("runs/quick" if args.quick else "runs")
    overrides = {}
    for text in args.overrides:
        keys, value = parse_override(text)
        overrides[".".join(keys)] = value
    contexts = parse_contexts(args.gpus, args.cpus)
    measured = {}
    for ds in datasets:
        measured[ds] = run_table(args.table, ds, out_root=out_root, data_root=args.root,
                                 quick=args.quick, contexts=contexts, kvstore=args.kvstore,
                                 progress=not args.no_progress, overrides=overrides)
    print()
    print(write_table_outputs(args.table, measured, out_root, datasets, quick=args.quick))
    print("\nwritten: %s/%s.md, %s.json and the curves PNG" % (out_root, args.table, args.table))
    return 0
