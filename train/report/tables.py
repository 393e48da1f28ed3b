"""The paper's tables: their definitions and their Markdown, published beside measured.

A table is data: Tables 1-3, the demo and the CIFAR-10 subset study in
``configs/tables.yaml`` (:func:`load_tables`, :func:`table_spec`; each row's
config and the numbers the paper published for it), Table 4 in
``configs/voc/table4.yaml`` (:func:`load_table4`).  The renderers turn measured
``results.json`` dicts into the Markdown that ``nst table``, ``nst demo``,
``nst detect table4`` and ``nst tables`` print: :func:`format_table` (one run per
row: paper, measured, difference), :func:`format_seed_table` (several seeds:
mean ± std, paired difference with its interval) and :func:`format_table4`
(per-class VOC AP).  Nothing here trains or reads run folders.
"""

import os
from pathlib import Path

import yaml

from nst.errors import NSTError

__all__ = ["CONFIG_DIR", "METRIC_NAMES", "QUICK_NOTE", "REPO", "TABLE4_QUICK_BANNER",
           "format_seed_table", "format_table", "format_table4", "load_table4", "load_tables",
           "select_table4_rows", "table_spec", "teacher_variant"]

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "configs"
TABLES_FILE = CONFIG_DIR / "tables.yaml"
TABLE4_FILE = CONFIG_DIR / "voc" / "table4.yaml"


def load_tables(path=TABLES_FILE):
    """Every table of ``configs/tables.yaml``: ``{name: spec}``."""
    if not os.path.isfile(path):
        raise NSTError("table definitions %s are missing; run from a checkout of the "
                       "project (pip install -e .)" % path)
    with open(path, "r", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def table_spec(name, path=TABLES_FILE):
    """One table's spec from ``configs/tables.yaml`` (an unknown name is an error)."""
    tables = load_tables(path)
    if name not in tables:
        raise NSTError("unknown table %r; known tables: %s" % (name, ", ".join(tables)))
    return tables[name]


def teacher_variant(spec, teacher=None, quick=False):
    """``(name, variant)`` of the table's teacher choices (``teachers:`` in
    tables.yaml), or ``(None, None)`` for a table without choices.

    ``--quick`` always trains its own small teacher (variant ``own``); otherwise
    ``teacher`` names the variant, default the one marked ``default``.
    """
    variants = spec.get("teachers")
    if not variants:
        if teacher is not None:
            raise NSTError("this table has no teacher choices; drop --teacher")
        return None, None
    if quick:
        teacher = "own"
    if teacher is None:
        teacher = next(name for name, v in variants.items() if v.get("default"))
    if teacher not in variants:
        raise NSTError("unknown --teacher %r; choose one of %s" % (teacher, ", ".join(variants)))
    return teacher, variants[teacher]


def _fmt(value):
    return "—" if value is None else "%.2f" % value


QUICK_NOTE = ("> QUICK MODE: the measured numbers come from the scaled-down `--quick` runs "
              "(a few epochs, small networks; see `quick` in configs/tables.yaml). They check "
              "the pipeline and are not a reproduction of the paper's numbers.")


# the key of each row's published numbers, per metric
PAPER_KEYS = {"test_top1_err": "paper", "test_top5_err": "paper_top5"}
METRIC_NAMES = {"test_top1_err": "Top-1", "test_top5_err": "Top-5"}


def format_table(name, measured, datasets=None, metrics=None, teacher=None, quick=False):
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
    lines += teacher_note_lines(spec, datasets, teacher, quick)
    lines += teacher_check_lines(spec, measured, datasets)
    lines += ["", "Source of the paper's numbers: %s." % spec.get("source", "")]
    return "\n".join(lines)


def teacher_note_lines(spec, datasets, teacher=None, quick=False):
    """What to expect of the teacher: the published error of the teacher actually
    used (its training recipe's or its checkpoint's), beside the paper's."""
    row = next((r for r in spec["rows"] if r.get("role") == "teacher"), None)
    if row is None:
        return []
    name, variant = teacher_variant(spec, teacher, quick)
    expect = variant if variant is not None else row.get("expected")
    if not expect or not expect.get("published"):
        return []

    def numbers(table):
        parts = []
        for ds in datasets:
            value = (table or {}).get(ds)
            if isinstance(value, dict):
                parts.append("%s: top-1 %.2f, top-5 %.2f" % (ds, value["top1"], value["top5"]))
            elif value is not None:
                parts.append("%s %.2f" % (ds, value))
        return ", ".join(parts)

    paper = {ds: {"top1": row["paper"][ds], "top5": row["paper_top5"][ds]}
             if row.get("paper_top5") else row["paper"][ds]
             for ds in datasets if (row.get("paper") or {}).get(ds) is not None}
    scaled = " (--quick trains a scaled-down teacher: these are the full recipe's numbers)" \
        if quick else ""
    return ["", "Teacher %s: %s. Its published error: %s (%s); the paper's teacher: %s.%s"
            % (row.get("model", ""), expect["text"], numbers(expect["published"]),
               expect["source"], numbers(paper) or "not published", scaled)]


def teacher_check_lines(spec, measured, datasets):
    """One line per dataset: the teacher's test error as the distilled rows measured it
    before their first step (``teacher_eval`` of their ``results.json``), flagged
    when the check warned."""
    lines = []
    for ds in datasets:
        seen = {}
        for row in spec["rows"]:
            teval = ((measured.get(ds) or {}).get(row["key"]) or {}).get("teacher_eval")
            if teval:
                key = (teval.get("checkpoint"), teval["top1_err"], teval["top5_err"])
                seen.setdefault(key, (teval, []))[1].append(row["method"])
        for (checkpoint, top1, top5), (teval, methods) in seen.items():
            lines.append("Teacher check on %s (test split, %d images, before distilling; %s): "
                         "top-1 error %.2f%%, top-5 error %.2f%%%s" % (
                             ds, teval.get("images", 0),
                             "all distilled rows" if len(seen) == 1 else ", ".join(methods),
                             top1, top5,
                             " -- WARNING: %s" % teval["warning"] if teval.get("warning")
                             else ""))
    return [""] + lines if lines else []


def _pm(mean, std):
    if mean is None:
        return "not run"
    return "%.2f" % mean if std is None else "%.2f ± %.2f" % (mean, std)


def format_seed_table(name, summary, quick=False):
    """Markdown: per row mean ± std over seeds, each seed's value, and the paired
    difference to the student with its 95% confidence interval (train.seeds)."""
    spec = table_spec(name)
    lines = ["**%s**" % spec["title"], ""]
    for ds, item in summary.items():
        metric = METRIC_NAMES.get(item["metric"], item["metric"])
        seeds = item["seeds"]
        has_paper = any((r.get("paper") or {}).get(ds) is not None for r in spec["rows"])
        head = ["Method", "Model", "%s error, mean ± std (%s, %d seeds)" % (metric, ds, len(seeds)),
                "per seed (%s)" % ", ".join(seeds),
                "Δ vs %s, paired: mean [95%% CI]" % item["baseline"]]
        if has_paper:
            head.append("paper")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        models = {r["key"]: r for r in spec["rows"]}
        for row in item["rows"]:
            diff = row["diff_vs_student"]
            if diff is None or diff["mean"] is None:
                shown = "—"
            elif diff["ci95"] is None:
                shown = "%+.2f (one seed: no interval)" % diff["mean"]
            else:
                shown = "%+.2f [%+.2f, %+.2f]" % (diff["mean"], diff["ci95"][0], diff["ci95"][1])
            cells = [row["name"], models[row["key"]].get("model", ""), _pm(row["mean"], row["std"]),
                     ", ".join("%.2f" % row["seeds"][s] if s in row["seeds"] else "—"
                               for s in seeds), shown]
            if has_paper:
                cells.append(_fmt((models[row["key"]].get("paper") or {}).get(ds)))
            lines.append("| " + " | ".join(cells) + " |")
        teacher = item.get("teacher")
        if teacher:
            value = teacher.get(item["metric"])
            paper = (models[teacher["key"]].get("paper") or {}).get(ds)
            cells = ["Teacher", teacher.get("model") or "", "%s (trained once)" % _fmt(value),
                     "—", "—"] + ([_fmt(paper)] if has_paper else [])
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Mean ± sample std over the seeds; Δ: the per-seed difference to the "
                  "%s row (same seed = same initialisation and data order), its mean and 95%% "
                  "confidence interval from the t-distribution with n-1 degrees of freedom; "
                  "negative = lower error than the %s." % (item["baseline"], item["baseline"]),
                  ""]
    if spec.get("source"):
        lines.append("Source of the paper's numbers: %s." % spec["source"])
    if quick:
        lines += ["", QUICK_NOTE]
    return "\n".join(lines)


# ------------------------------------------------------------------- Table 4
TABLE4_QUICK_BANNER = ("QUICK MODE: a pipeline check on a tiny VOC-format dataset of CIFAR-10 "
                       "images (7 of the 20 classes, a few dozen test images) with quarter-width "
                       "backbones; these numbers are NOT a reproduction of Table 4 and say "
                       "nothing about the transfer methods.")


def load_table4(path=TABLE4_FILE):
    """Table 4's definition (``configs/voc/table4.yaml``): rows, columns, title, source."""
    if not os.path.isfile(path):
        raise NSTError("the Table 4 definition %s is missing; run from a checkout of the "
                       "project" % path)
    with open(path, "r", encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)
    for key in ("rows", "columns", "title", "source"):
        if key not in spec:
            raise NSTError("%s lacks %r" % (path, key))
    return spec


def select_table4_rows(spec, keys=None):
    """The rows of Table 4 named by ``keys`` (all when empty); unknown keys are an error."""
    rows = spec["rows"]
    if not keys:
        return rows
    known = [r["key"] for r in rows]
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise NSTError("unknown Table 4 row(s) %s; the rows are %s"
                       % (", ".join(unknown), ", ".join(known)))
    return [r for r in rows if r["key"] in keys]


def _cell(value):
    return "—" if value is None else "%.1f" % value


def format_table4(results, quick=False, rows=None):
    """Markdown table: per method the paper's row and the measured row (AP %)."""
    spec = load_table4()
    classes = list(spec["columns"])
    head = ["Method", "", "mAP"] + [spec["columns"][c] for c in classes]
    lines = []
    if quick:
        lines += ["> " + TABLE4_QUICK_BANNER, ""]
    lines += ["**%s**" % spec["title"], "", "| " + " | ".join(head) + " |",
              "|" + "---|" * len(head)]
    for row in select_table4_rows(spec, rows):
        paper = row.get("paper") or {}
        lines.append("| " + " | ".join([row["method"], "paper", _cell(paper.get("mAP"))]
                                       + [_cell(paper.get(c)) for c in classes]) + " |")
        result = results.get(row["key"])
        if result is None:
            lines.append("| %s | measured | not run |%s" % (row["method"],
                                                            " |" * len(classes)))
            continue
        ap = result.get("ap") or {}
        measured = [None if ap.get(c) is None else 100 * ap[c] for c in classes]
        m = result.get("mAP")
        label = "quick" if quick else "measured"
        lines.append("| " + " | ".join([row["method"], label, _cell(None if m is None else 100 * m)]
                                       + [_cell(v) for v in measured]) + " |")
    lines += ["", "Paper: %s. Measured: VOC07 11-point AP at IoU 0.5 on the test split; "
                  "— = no ground truth of that class in the test split (left out of the mAP)."
              % spec["source"]]
    return "\n".join(lines)
