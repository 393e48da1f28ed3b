"""Run the rows of a paper table and print it beside the published numbers.

A table is data in ``configs/tables.yaml``: its rows (the config that trains
each one, the numbers the paper published for it) and the overrides of its
scaled-down ``--quick`` version.  :func:`run_table` trains the teacher row
first, then every other row reading that teacher's checkpoint; finished rows
(``results.json`` present) are kept, interrupted rows are resumed.
:func:`train.report.tables.format_table` renders the Markdown table, measured
next to the paper.

``nst table NAME --seeds 0,1,2`` trains every student row once per seed (in
``<row>/seed<N>/``; the teacher once): a seed fixes the student's
initialisation and data order in every row, so :func:`write_seed_outputs`
reports per row the mean ± std over seeds and the paired difference to the
student with its 95% t-interval (:mod:`train.seeds`), in ``NAME_seeds.md`` /
``NAME_seeds.json``, and the curves as the mean over seeds with a band.
``--rows KEY,...`` trains only those rows (the study script runs one process
per run this way).

This is what ``scripts/table1_cifar.sh``, ``scripts/table2_cifar.sh``,
``scripts/cifar_subset_study.sh`` and ``nst demo`` run (``nst table NAME``).
"""

import json
import os
import shutil

from nst.errors import NSTError
from nst.io import write_json, write_text
from train.config import read_config, set_values, validate_config
from train.report.tables import CONFIG_DIR, QUICK_NOTE, format_seed_table, format_table, \
    table_spec, teacher_variant


def _ordered_rows(spec):
    rows = spec["rows"]
    return [r for r in rows if r.get("role") == "teacher"] + \
           [r for r in rows if r.get("role") != "teacher"]


def row_out(spec, out_root, dataset, row, seed=None):
    """A row's run folder; with a ``seed`` (``--seeds``), ``seed<N>/`` inside it for every
    row but the teacher, which is trained once for all seeds."""
    layout = spec.get("layout", "{dataset}/{key}")
    out = os.path.join(out_root, layout.format(dataset=dataset, key=row["key"]))
    if seed is not None and row.get("role") != "teacher":
        out = os.path.join(out, "seed%d" % seed)
    return out


def trains_teacher_row(spec, teacher=None, quick=False):
    """True when the table's teacher row is trained (not taken from a checkpoint)."""
    _, variant = teacher_variant(spec, teacher, quick)
    return variant is None or bool(variant.get("train"))


def row_config(spec, row, dataset, out_root, data_root=None, quick=False, overrides=None,
               teacher=None, seed=None):
    """The validated config of one row, with its output folder and teacher path.

    ``seed`` (``--seeds``) replaces the config's ``seed`` of every row but the
    teacher: the student's initialisation and data order (train.seeds)."""
    path = CONFIG_DIR / row["config"].format(dataset=dataset)
    raw = read_config(path)
    is_teacher = row.get("role") == "teacher"
    values = {"out": row_out(spec, out_root, dataset, row, seed)}
    if seed is not None and not is_teacher:
        values["seed"] = int(seed)
    _, variant = teacher_variant(spec, teacher, quick)
    if variant is not None and raw.get("teacher") is not None:
        values.update(variant.get("set") or {})
        renames = variant.get("features") or {}
        for entry in raw.get("transfer") or []:
            names = entry.get("teacher")
            if isinstance(names, list):
                entry["teacher"] = [renames.get(n, n) for n in names]
            elif names in renames:
                entry["teacher"] = renames[names]
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
    if raw.get("teacher") is not None and trains_teacher_row(spec, teacher, quick):
        teacher_row = next((r for r in spec["rows"] if r.get("role") == "teacher"), None)
        if teacher_row is not None:
            values["teacher.checkpoint"] = os.path.join(
                row_out(spec, out_root, dataset, teacher_row), "student.params")
    values.update(overrides or {})
    return validate_config(set_values(raw, values), source=str(path))


def run_table(name, dataset, out_root="runs", data_root=None, quick=False, contexts=None,
              kvstore=None, progress=True, fresh=False, overrides=None, log=print,
              teacher=None, seed=None, only=None):
    """Train every row of table ``name`` on ``dataset``; returns {row key: results}.

    ``seed``: train the students with that seed, each in ``<row folder>/seed<N>``
    (the teacher once, in its own folder).  ``only``: row keys to train (others
    are skipped, finished or not; their teacher must exist when they need it).

    With a checkpoint teacher (``teacher`` a variant without ``train``) the
    teacher row is not trained: its numbers are the teacher check of the
    first distilled row (the checkpoint's error on the validation split)."""
    from train.trainer import Distiller
    from train.devices import parse_contexts

    spec = table_spec(name)
    if dataset not in spec["datasets"]:
        raise NSTError("table %s is defined for %s, not %r"
                       % (name, ", ".join(spec["datasets"]), dataset))
    contexts = contexts or parse_contexts()
    results = {}
    rows = _ordered_rows(spec)
    train_teacher = trains_teacher_row(spec, teacher, quick)
    if only is not None:
        unknown = sorted(set(only) - {r["key"] for r in rows})
        if unknown:
            raise NSTError("table %s has no row %s; its rows: %s" % (
                name, ", ".join(unknown), ", ".join(r["key"] for r in rows)))
    for index, row in enumerate(rows):
        if only is not None and row["key"] not in only:
            continue
        if row.get("role") == "teacher" and not train_teacher:
            log("[%d/%d] %s: from its checkpoint (--teacher %s), not trained"
                % (index + 1, len(rows), row["method"], teacher_variant(spec, teacher)[0]))
            continue
        cfg = row_config(spec, row, dataset, out_root, data_root, quick, overrides, teacher,
                         seed)
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
    teacher_row = next((r for r in rows if r.get("role") == "teacher"), None)
    if teacher_row is not None and not train_teacher:
        check = next((r["teacher_eval"] for r in results.values() if r.get("teacher_eval")),
                     None)
        if check:
            results[teacher_row["key"]] = {"test_top1_err": check["top1_err"],
                                           "test_top5_err": check["top5_err"],
                                           "source": "teacher check (checkpoint)"}
    return results


def write_table_outputs(name, measured, out_root, datasets=None, quick=False, teacher=None):
    """Write ``<out_root>/<name>.md`` and ``<name>.json`` and the joint curves PNG."""
    from train.report.curves import plot_error_curves  # matplotlib: imported on use

    text = format_table(name, measured, datasets, teacher=teacher, quick=quick)
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


# ------------------------------------------------------------- several seeds
def seed_summary(name, by_seed, datasets=None):
    """Mean ± std over seeds and the paired difference to the student, per dataset.

    ``by_seed`` maps dataset -> {seed: {row key: results}} (:func:`run_table`
    once per seed).  Returns ``{dataset: {"teacher": {"network",
    "test_top1_err", ...}, "rows": [...], "seeds": [...], "metric": ...}}``,
    each row as :func:`train.seeds.aggregate_rows` (the table's first metric;
    further metrics under ``"metrics"``), the teacher apart.
    """
    from train.seeds import aggregate_rows

    spec = table_spec(name)
    datasets = datasets or list(by_seed)
    metrics = spec.get("metrics") or ["test_top1_err"]
    baseline = spec.get("baseline", "student")
    out = {}
    for ds in datasets:
        runs = by_seed.get(ds) or {}
        per_metric = {m: aggregate_rows(spec["rows"], runs, m, baseline) for m in metrics}
        rows = []
        for index, item in enumerate(per_metric[metrics[0]]):
            item = dict(item)
            if len(metrics) > 1:
                item["metrics"] = {m: per_metric[m][index] for m in metrics[1:]}
            rows.append(item)
        teacher_row = next((r for r in spec["rows"] if r.get("role") == "teacher"), None)
        teacher = None
        if teacher_row is not None:
            result = next((r[teacher_row["key"]] for r in runs.values()
                           if r.get(teacher_row["key"])), None)
            checks = [r.get("teacher_eval") for s in runs.values() for r in s.values()
                      if r.get("teacher_eval")]
            teacher = {"network": (result or {}).get("student") or teacher_row.get("model"),
                       "model": teacher_row.get("model"), "key": teacher_row["key"]}
            for m in metrics:
                teacher[m] = (result or {}).get(m)
            if checks:
                teacher["check_before_distilling"] = checks[0]
        out[ds] = {"metric": metrics[0], "seeds": [str(s) for s in sorted(runs)],
                   "baseline": baseline, "teacher": teacher,
                   "rows": [r for r in rows if r["key"] != (teacher or {}).get("key")]}
    return out


def write_seed_outputs(name, by_seed, out_root, datasets=None, quick=False):
    """``<out_root>/<name>_seeds.md`` / ``.json`` (per-seed values, mean ± std, paired
    differences) and ``<name>_<dataset>_seeds_curves.png`` (mean over seeds with a band)."""
    from train.report.curves import plot_mean_curves, seed_histories  # imported on use

    summary = seed_summary(name, by_seed, datasets)
    text = format_seed_table(name, summary, quick)
    write_text(os.path.join(out_root, name + "_seeds.md"), text + "\n")
    write_json(os.path.join(out_root, name + "_seeds.json"),
               {"table": name, "summary": summary, "runs": by_seed})
    spec = table_spec(name)
    for ds, runs in by_seed.items():
        groups = seed_histories(spec["rows"], runs)
        if groups:
            plot_mean_curves(groups, os.path.join(out_root, "%s_%s_seeds_curves.png" % (name, ds)),
                             title="%s on %s, mean over seeds: train (dashed), test (solid)"
                             % (name, ds))
    return text, summary


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
    parser.add_argument("--teacher", default=None,
                        help="for tables with teacher choices (table3): authors (default: the "
                             "authors' MXNet ResNet-101 checkpoint), gluoncv (GluonCV's "
                             "resnet101_v2) or own (train configs/imagenet/teacher.yaml first)")
    parser.add_argument("--seeds", default=None, metavar="0,1,2",
                        help="train every student row once per seed (same seed = same "
                             "initialisation and data order in every row; the teacher once) and "
                             "report mean ± std and the paired difference to the student with "
                             "its 95%% confidence interval (<out-root>/NAME_seeds.md/.json)")
    parser.add_argument("--rows", default=None, metavar="KEY,...",
                        help="train only these rows (keys in configs/tables.yaml); no table "
                             "is written (run again without --rows to write it)")
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
    teacher_variant(spec, args.teacher, args.quick)      # an unknown --teacher fails first
    only = None if args.rows is None else [k.strip() for k in args.rows.split(",") if k.strip()]
    if args.seeds is not None:
        return _run_seeds(args, spec, datasets, out_root, overrides, contexts, only)
    measured = {}
    for ds in datasets:
        measured[ds] = run_table(args.table, ds, out_root=out_root, data_root=args.root,
                                 quick=args.quick, contexts=contexts, kvstore=args.kvstore,
                                 progress=not args.no_progress, overrides=overrides,
                                 teacher=args.teacher, only=only)
    if only is not None:
        print("\ntrained rows %s; run without --rows to write the table" % ", ".join(only))
        return 0
    print()
    print(write_table_outputs(args.table, measured, out_root, datasets, quick=args.quick,
                              teacher=args.teacher))
    print("\nwritten: %s/%s.md, %s.json and the curves PNG" % (out_root, args.table, args.table))
    return 0


def _run_seeds(args, spec, datasets, out_root, overrides, contexts, only):
    """``nst table NAME --seeds ...``: seed by seed (all rows of seed 0 first), then the
    summary over seeds."""
    from train.seeds import parse_seeds

    seeds = parse_seeds(args.seeds)
    by_seed = {}
    for ds in datasets:
        by_seed[ds] = {}
        for seed in seeds:
            print("== %s, seed %d (%d of %d)" % (ds, seed, seeds.index(seed) + 1, len(seeds)))
            by_seed[ds][seed] = run_table(
                args.table, ds, out_root=out_root, data_root=args.root, quick=args.quick,
                contexts=contexts, kvstore=args.kvstore, progress=not args.no_progress,
                overrides=overrides, teacher=args.teacher, seed=seed, only=only)
    if only is not None:
        print("\ntrained rows %s for seeds %s; run without --rows to write the table"
              % (", ".join(only), args.seeds))
        return 0
    text, _ = write_seed_outputs(args.table, by_seed, out_root, datasets, quick=args.quick)
    print()
    print(text)
    print("\nwritten: %s/%s_seeds.md, %s_seeds.json and the curves PNG (mean over seeds)"
          % (out_root, args.table, args.table))
    return 0
