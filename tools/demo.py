"""``nst demo``: the paper's story on real data that ships with scikit-learn, in minutes.

The handwritten digits (1,797 8x8 images resized to 32x32, fixed stratified
split: 1,257 training / 540 test images).  A small pre-activation ResNet
teacher learns from all 1,257 training digits; the Inception-BN-small student
gets only the first 100 of them (about ten labelled digits per class), the
setting where a student alone falls well short of its teacher and a teacher
has something to give.  The student is trained alone, with KD, with NST
(polynomial kernel) and with KD+NST, once per seed (default 0, 1, 2; a seed
fixes the student's initial weights and data order, the same in every row,
:mod:`train.seeds`), and the demo prints, per row, the test error's mean ± std
over the seeds, each seed's value and the paired difference to the student
alone with its 95% confidence interval; then what share of the
teacher–student gap each method closes, and the MMD² between the teacher's and
the students' neuron selectivity patterns with their t-SNE (the paper's
Fig. 5).  Every number comes from this run.

Outputs in ``runs/demo/``: one folder per row (``<row>/seed<N>/``, the teacher
in ``teacher/``), ``demo.md`` (the table and its reading), ``demo.json``
(per row ``test_top1_err`` = the mean over seeds, ``test_top1_err_std``,
``seeds`` = each seed's value, ``diff_vs_student``), ``demo_digits_curves.png``
(mean over seeds with a ± std band) and ``demo_tsne.png``/``.json``.  The
rows are the configs in ``configs/demo/`` and the ``demo`` table of
``configs/tables.yaml``.
"""

import os
import shutil
import time

from nst.io import write_json, write_text
from train.experiments import row_out, run_table, seed_summary
from train.report.tables import format_seed_table, table_spec

from .tsne import make_tsne_figure

DEFAULT_SEEDS = "0,1,2"


def add_arguments(parser):
    parser.add_argument("--out-root", default=os.path.join("runs", "demo"),
                        help="output folder (default runs/demo); its previous demo runs are "
                             "replaced")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run (default: the configs', teacher 8, students 30)")
    parser.add_argument("--seeds", default=DEFAULT_SEEDS,
                        help="student seeds (default 0,1,2): each row is trained once per seed")
    parser.add_argument("--cpus", type=int, default=None, help="number of CPU contexts")
    parser.add_argument("--no-progress", action="store_true")


def gap_reading(summary):
    """The teacher–student gap and what each row does to it (dicts, for print and JSON)."""
    rows = {r["key"]: r for r in summary["rows"]}
    teacher = (summary.get("teacher") or {}).get("test_top1_err")
    student = rows.get("student") or {}
    if teacher is None or student.get("mean") is None:
        return None
    gap = student["mean"] - teacher
    reading = {"teacher": teacher, "student_mean": student["mean"],
               "student_std": student["std"], "gap": gap,
               "gap_over_student_std": gap / student["std"] if student["std"] else None,
               "rows": {}}
    for key, row in rows.items():
        if key == "student" or row.get("mean") is None:
            continue
        reading["rows"][key] = {"name": row["name"], "mean": row["mean"], "std": row["std"],
                                "closes_gap_percent": 100.0 * (student["mean"] - row["mean"])
                                / gap if gap else None,
                                "diff_vs_student": row["diff_vs_student"]}
    return reading


def explain(reading, seeds, train_images, test_images):
    """The printed paragraph that says what the numbers mean."""
    if reading is None:
        return "The teacher or the student alone did not finish; no reading."
    lines = ["What the numbers mean: test error in %% on the %s held-out digits; mean ± std "
             "over %d seeds (a seed fixes the student's initial weights and the order of its "
             "training images, the same in every row, so rows are compared seed by seed)."
             % (test_images or "held-out", len(seeds)),
             "The teacher (ResNet, all %s training digits) errs on %.2f%%; the student alone "
             "(Inception-BN-small, %s labelled digits) on %.2f%% ± %.2f: a gap of %.2f points%s."
             % (train_images.get("teacher", "?"), reading["teacher"],
                train_images.get("student", "?"), reading["student_mean"],
                reading["student_std"] or 0.0, reading["gap"],
                " = %.1f× the student's seed-to-seed std (clearly more than 3×)"
                % reading["gap_over_student_std"] if reading["gap_over_student_std"]
                and reading["gap_over_student_std"] > 3 else
                " (NOT more than 3× the student's seed-to-seed std: the demo cannot separate "
                "the rows)" if reading["gap_over_student_std"] else "")]
    for item in reading["rows"].values():
        diff = item["diff_vs_student"] or {}
        ci = diff.get("ci95")
        verdict = ""
        if ci:
            verdict = ("; better than the student alone on these seeds (the interval excludes 0)"
                       if ci[1] < 0 else
                       "; worse than the student alone (the interval excludes 0)" if ci[0] > 0
                       else "; not distinguishable from the student alone (the interval "
                            "contains 0)")
        lines.append("  %s: %.2f%% ± %.2f, closes %.0f%% of the gap (paired Δ %+.2f, 95%% CI "
                     "%s)%s." % (item["name"], item["mean"], item["std"] or 0.0,
                                 item["closes_gap_percent"] or 0.0, diff.get("mean") or 0.0,
                                 "[%+.2f, %+.2f]" % tuple(ci) if ci else "—", verdict))
    return "\n".join(lines)


def _train_images(results, key):
    """Training images of a row's run: the digits training split, cut to the config's
    ``data.train_limit``."""
    from train.data import load_digits_32

    from train.checkpoint import read_manifest

    log = (results.get(key) or {}).get("log")
    manifest = read_manifest(os.path.dirname(log)) if log else None
    limit = ((manifest or {}).get("config") or {}).get("data", {}).get("train_limit")
    total = len(load_digits_32("train")[1])
    return min(total, limit) if limit else total


def run(args):
    from train.devices import parse_contexts
    from train.seeds import parse_seeds

    tic = time.time()
    seeds = parse_seeds(args.seeds)
    spec = table_spec("demo")
    overrides = {} if args.epochs is None else {"epochs": args.epochs,
                                                "optimizer.lr_steps": []}
    print("nst demo: a teacher, then the student alone, with KD, NST and KD+NST for seeds %s "
          "on scikit-learn's digits; outputs in %s" % (", ".join(map(str, seeds)),
                                                       args.out_root))
    for row in spec["rows"]:             # replace the previous demo's runs
        folder = row_out(spec, args.out_root, "digits", row)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
    contexts = parse_contexts(None, args.cpus)
    by_seed = {}
    for seed in seeds:
        print("== seed %d" % seed)
        by_seed[seed] = run_table("demo", "digits", out_root=args.out_root, contexts=contexts,
                                  progress=not args.no_progress, overrides=overrides,
                                  seed=seed)
    return report(args, seeds, spec, by_seed, tic)


def report(args, seeds, spec, by_seed, tic):
    """Table, reading, curves, t-SNE and demo.json/demo.md of finished demo runs."""
    from train.report.curves import plot_mean_curves, seed_histories

    summary = seed_summary("demo", {"digits": by_seed})["digits"]
    teacher_key = summary["teacher"]["key"]
    train_images = {"teacher": _train_images(by_seed[seeds[0]], teacher_key),
                    "student": _train_images(by_seed[seeds[0]], "student")}
    test_images = (summary["teacher"].get("check_before_distilling") or {}).get("images")
    reading = gap_reading(summary)
    text = format_seed_table("demo", {"digits": summary})
    paragraph = explain(reading, seeds, train_images, test_images)

    curves_png = os.path.join(args.out_root, "demo_digits_curves.png")
    plot_mean_curves(seed_histories(spec["rows"], by_seed, teacher=False), curves_png,
                     title="digits, %d seeds: mean train (dashed) and test (solid) error, "
                     "band ± 1 std" % len(seeds))
    tsne_png = os.path.join(args.out_root, "demo_tsne.png")
    first = seeds[0]
    figure = make_tsne_figure(os.path.join(args.out_root, "teacher"),
                              [os.path.join(args.out_root, "student", "seed%d" % first),
                               os.path.join(args.out_root, "nst_poly", "seed%d" % first)],
                              tsne_png, labels=["Student (no transfer)", "NST (poly)"],
                              log=lambda *_: None)
    mmd = ("MMD^2 (poly) between teacher and student selectivity patterns (Fig. 5, seed %d; "
           "lower = the student's channels respond more like the teacher's): " % first
           + ", ".join("%s %.4f" % (p["label"], p["mmd2"]) for p in figure["panels"]))

    rows = {}
    for item in summary["rows"]:
        result = by_seed[first].get(item["key"]) or {}
        rows[item["key"]] = {"method": item["name"], "test_top1_err": item["mean"],
                             "test_top1_err_std": item["std"], "seeds": item["seeds"],
                             "diff_vs_student": item["diff_vs_student"],
                             "transfer": result.get("transfer"), "student": result.get("student")}
    teacher_result = by_seed[first].get(teacher_key) or {}
    rows[teacher_key] = {"method": "Teacher", "test_top1_err": teacher_result.get("test_top1_err"),
                         "test_top1_err_std": None, "seeds": {}, "trained_once": True,
                         "student": teacher_result.get("student")}
    seconds = time.time() - tic
    write_json(os.path.join(args.out_root, "demo.json"),
               {"digits": rows, "seeds": [str(s) for s in seeds], "reading": reading,
                "train_images": train_images, "test_images": test_images,
                "mmd2": {p["label"]: p["mmd2"] for p in figure["panels"]},
                "seconds": seconds})
    write_text(os.path.join(args.out_root, "demo.md"),
               text + "\n\n" + paragraph + "\n\n" + mmd + "\n")
    print()
    print(text)
    print()
    print(paragraph)
    print("\n" + mmd)
    print("\ndone in %.0f s. Outputs in %s/: demo.md (table), demo.json (results), "
          "demo_digits_curves.png (error curves, mean over seeds), demo_tsne.png (t-SNE, "
          "Fig. 5), one run folder per row and seed." % (seconds, args.out_root))
    return 0
