"""``nst tables``: the results of finished runs beside the paper's Tables 1-4.

Nothing is trained here: the tool reads the ``results.json`` of every row
that has finished and renders the paper's tables with the published number,
the measured one and the difference, using the renderers the table runners
use (:mod:`train.report.tables`: :func:`~train.report.tables.format_table` for
Tables 1-3, with top-1 and top-5 columns for Table 3,
:func:`~train.report.tables.format_table4` for Table 4), so ``nst tables``
prints exactly what ``nst table`` / ``nst detect table4`` print.  The paper's
numbers are data: ``configs/tables.yaml`` (Tables 1-3, with their sources) and
``configs/voc/table4.yaml`` (Table 4).

Where the results are read:

* Tables 1-3: ``<runs>/<dataset>/<row key>/results.json`` (the layout of
  ``configs/tables.yaml``, as ``nst table`` writes it; Table 3's dataset is
  ``imagenet``); ``--runs`` defaults to ``runs`` (``runs/quick`` with
  ``--quick``);
* Table 4: ``<voc-runs>/<row key>/results.json``; ``--voc-runs`` defaults to
  ``runs/voc`` (``runs/voc_quick`` with ``--quick``).

A row without ``results.json`` is "not run"; rows still training are listed
under their table with their progress.  ``-o FILE.md`` also writes the
measured numbers as ``FILE.json``.
"""

import json
import os

from nst.errors import NSTError
from nst.io import read_json, write_json, write_text
from train.experiments import row_out
from train.report.tables import QUICK_NOTE, format_table, format_table4, load_table4, \
    load_tables, table_spec

__all__ = ["collect_table", "collect_table4", "render", "make_tables", "add_arguments", "run"]

DEFAULT_TABLES = ("table1", "table2", "table3", "table4")


def _read_results(path):
    data = read_json(path, "results file", "delete it and rerun the row (its checkpoints "
                     "are kept, so it resumes)")
    if not isinstance(data, dict):
        raise NSTError("results file %s is not a JSON object; delete it and rerun the row"
                       % path)
    return data


def _progress(folder):
    """``"epoch k of E"`` for a run folder that is still training, else None."""
    manifest = os.path.join(folder, "checkpoint.json")
    if not os.path.isfile(manifest):
        return None
    try:
        with open(manifest, "r", encoding="utf-8") as handle:
            data = json.load(handle)
        return "epoch %d of %d" % (data["epoch"], data["config"]["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return "started"


def collect_table(name, runs_root, datasets=None):
    """``({dataset: {row key: results}}, [(method, dataset, progress), ...])`` of table ``name``."""
    spec = table_spec(name)
    measured, running = {}, []
    for ds in datasets or spec["datasets"]:
        rows = {}
        for row in spec["rows"]:
            folder = row_out(spec, runs_root, ds, row)
            path = os.path.join(folder, "results.json")
            if os.path.isfile(path):
                rows[row["key"]] = _read_results(path)
            else:
                progress = _progress(folder)
                if progress:
                    running.append((row["method"], ds, progress))
        measured[ds] = rows
    return measured, running


def collect_table4(voc_root):
    """``({row key: results}, running)`` of Table 4 from ``<voc_root>/<key>/results.json``."""
    spec = load_table4()
    results, running = {}, []
    for row in spec["rows"]:
        folder = os.path.join(voc_root, row["key"])
        path = os.path.join(folder, "results.json")
        if os.path.isfile(path):
            results[row["key"]] = _read_results(path)
        elif os.path.isdir(folder) and os.listdir(folder):
            running.append((row["method"], "voc", "started"))
    return results, running


def _running_note(running):
    if not running:
        return []
    return ["", "Still training: " + "; ".join("%s on %s (%s)" % item for item in running) + "."]


def _render_table(name, measured):
    """Tables 1-3 (or the demo's) via train.report.tables.format_table."""
    return format_table(name, measured, list(measured))


def render(tables, runs_root, voc_root, quick=False):
    """``(markdown, measured)`` for the named tables."""
    defined = load_tables()
    parts, measured = ["# Measured results beside the paper's"], {}
    if quick:
        parts.append(QUICK_NOTE)
    where = []
    if any(name != "table4" for name in tables):
        where.append("`%s`" % runs_root)
    if "table4" in tables:
        where.append("`%s` (Table 4)" % voc_root)
    parts.append("Measured: the `results.json` of the runs under %s (\"not run\": none yet)."
                 % " and ".join(where))
    for name in tables:
        if name == "table4":
            results, running = collect_table4(voc_root)
            measured[name] = results
            parts.append("\n".join([format_table4(results, quick=quick)]
                                   + _running_note(running)))
        elif name in defined:
            values, running = collect_table(name, runs_root)
            measured[name] = values
            parts.append("\n".join([_render_table(name, values)] + _running_note(running)))
        elif name == "table3":
            parts.append("**Table 3. ImageNet validation error (single crop)**: not defined in "
                         "configs/tables.yaml yet, so it cannot be collected.")
        else:
            raise NSTError("unknown table %r; known tables: %s" % (
                name, ", ".join(sorted(set(defined) | {"table4"}))))
    return "\n\n".join(parts) + "\n", measured


def make_tables(runs_root=None, voc_root=None, quick=False, tables=None, out=None, log=print):
    """Render the tables (with ``out``: write ``out`` and its ``.json``); returns the Markdown."""
    runs_root = runs_root or ("runs/quick" if quick else "runs")
    voc_root = voc_root or ("runs/voc_quick" if quick else "runs/voc")
    text, measured = render(list(tables or DEFAULT_TABLES), runs_root, voc_root, quick)
    if out:
        write_text(out, text)
        json_path = os.path.splitext(out)[0] + ".json"
        write_json(json_path, {"quick": quick, "runs": runs_root, "voc_runs": voc_root,
                               "tables": measured})
        log(text)
        log("written: %s, %s" % (out, json_path))
    else:
        log(text)
    return text


def add_arguments(parser):
    parser.description = ("Collect the results of finished runs into the paper's Tables 1-4, "
                          "beside the published numbers (nothing is trained).")
    parser.add_argument("--runs", default=None, metavar="DIR",
                        help="root of the table runs, <DIR>/<dataset>/<row>/results.json "
                             "(default runs, or runs/quick with --quick)")
    parser.add_argument("--voc-runs", default=None, metavar="DIR",
                        help="root of the Table 4 runs, <DIR>/<row>/results.json (default "
                             "runs/voc, or runs/voc_quick with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="read the scaled-down --quick runs (and say so in the output)")
    parser.add_argument("--table", dest="tables", action="append", default=None,
                        metavar="NAME",
                        help="table(s) to render: table1, table2, table3, table4, demo "
                             "(default: tables 1-4)")
    parser.add_argument("-o", "--out", default=None, metavar="FILE.md",
                        help="also write the Markdown here and the numbers as FILE.json")


def run(args):
    make_tables(args.runs, args.voc_runs, args.quick, args.tables, args.out)
    return 0
