"""The CIFAR-10 subset study: does transfer work at CPU scale?  (``scripts/cifar_subset_study.sh``)

The study is the table ``cifar10_subset`` of ``configs/tables.yaml`` (rows and
settings are the configs in ``configs/study/cifar10_subset/``): a teacher
trained once, then the rows Student, KD, FitNet, AT, NST (linear / poly /
Gaussian) and KD+NST (poly), each for every seed.  A seed fixes the student's
initialisation and data order in every row (:mod:`train.seeds`), so rows are
compared seed by seed.  All training is done by ``nst table`` (one process
per run, so that ``--jobs 2`` trains two single-threaded runs side by side on
a 2-core machine); this module only schedules those processes and writes the
record:

``train``
    the teacher (``nst table cifar10_subset --rows teacher``), then every
    (seed, row) run not finished yet, ``--jobs`` at a time, seed 0's rows first
    (finished runs are kept; an interrupted run resumes from its checkpoint),
    then ``nst table cifar10_subset --seeds ...`` writes the table over seeds.
``record``
    ``<results>/cifar10_subset.json`` (per row: each seed's test top-1 error,
    mean ± std, the paired difference to Student with its 95% t-interval; the
    teacher's error; minutes; CPU), ``cifar10_subset.md`` and the figures:
    ``cifar10_subset_curves.png`` (Fig. 3 style, mean over seeds with a band;
    ``nst curves``) and ``cifar10_subset_tsne.png`` (Fig. 5, the teacher against
    the student alone and the KD+NST student of seed 0; ``nst tsne``).
``verify ROW SEED``
    retrains one row for one seed into its own folder (with the recorded
    teacher when its run folder is here, else a retrained one) and prints
    ``{"row": ROW, "seed": SEED, "recorded": x, "measured": y}``; exit status 0
    when they agree within 0.5 points.  The CPU engine is deterministic: on the
    same CPU with the same operator thread count (recorded as
    ``omp_threads``) the two agree exactly.

Run as ``python -m tools.study {train,record,verify} ...`` (the script does).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

from nst.errors import NSTError
from nst.io import read_json, write_json, write_text

TABLE = "cifar10_subset"
TOLERANCE = 0.5          # points of test error --verify accepts
TSNE_ROWS = ("student", "kd_nst")
CURVE_ROWS = ("student", "kd", "fitnet", "at", "nst_linear", "nst_poly", "nst_gaussian", "kd_nst")


def nst_executable():
    """The ``nst`` command beside this Python (the project venv), else on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), "nst")
    return local if os.path.exists(local) else "nst"


def _spec():
    from train.report.tables import table_spec
    return table_spec(TABLE)


def _rows(spec):
    teacher = next(r for r in spec["rows"] if r.get("role") == "teacher")
    return teacher, [r for r in spec["rows"] if r.get("role") != "teacher"]


def find_row(spec, text):
    """A row by its key (``kd_nst``) or its name (``KD+NST (poly)``), case-insensitive."""
    for row in spec["rows"]:
        if text.lower() in (row["key"].lower(), row["method"].lower()):
            return row
    raise NSTError("the study has no row %r; rows: %s" % (
        text, ", ".join('%s ("%s")' % (r["key"], r["method"]) for r in spec["rows"])))


def run_folder(out_root, row, seed=None, spec=None):
    from train.experiments import row_out
    return row_out(spec or _spec(), out_root, "cifar10", row, seed)


def _finished(folder):
    return os.path.isfile(os.path.join(folder, "results.json"))


def _read_results(folder):
    return read_json(os.path.join(folder, "results.json"), "results file",
                     "delete it and rerun the row (its checkpoints are kept, so it resumes)")


def _table_args(args):
    """Options every ``nst table`` call of the study gets."""
    extra = ["--out-root", args.out_root, "--no-progress"]
    if args.root:
        extra += ["--root", args.root]
    if args.gpus:
        extra += ["--gpus", args.gpus]
    if args.quick:
        extra.append("--quick")
    return extra


def _call(argv, log_path=None, log=print):
    """Run ``nst ARGV``; its output goes to ``log_path`` (appended) or ours."""
    command = [nst_executable()] + argv
    if log_path is None:
        return subprocess.call(command)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write("$ %s\n" % " ".join(command))
        handle.flush()
        return subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT)


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------

def train(args, log=print):
    """Teacher, then every unfinished (seed, row) run, ``args.jobs`` at a time."""
    from train.seeds import parse_seeds

    spec = _spec()
    seeds = parse_seeds(args.seeds)
    teacher, students = _rows(spec)
    table_args = _table_args(args)
    study_dir = os.path.join(args.out_root, TABLE)
    logs = os.path.join(study_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    tic = time.time()
    trained = 0
    if not _finished(run_folder(args.out_root, teacher, spec=spec)):
        log("study: training the teacher (%s), log %s/teacher.log"
            % (teacher["model"], logs))
        code = _call(["table", TABLE, "--rows", teacher["key"]] + table_args,
                     os.path.join(logs, "teacher.log"))
        if code != 0:
            raise NSTError("training the teacher failed (exit %d); see %s/teacher.log and run "
                           "the same command again to resume" % (code, logs))
        trained += 1
    pending = [(s, row) for s in seeds for row in students
               if not _finished(run_folder(args.out_root, row, s, spec))]
    total = len(seeds) * len(students)
    log("study: %d of %d student runs finished, %d to train, %d at a time (logs in %s/)"
        % (total - len(pending), total, len(pending), args.jobs, logs))
    running, failed, elsewhere = [], [], []
    while pending or running or elsewhere:
        while pending and len(running) < args.jobs:
            seed, row = pending.pop(0)
            if _finished(run_folder(args.out_root, row, seed, spec)):
                continue
            if _claimed(logs, row, seed):     # trained by another study process right now
                elsewhere.append((seed, row))
                continue
            path = os.path.join(logs, "%s_seed%d.log" % (row["key"], seed))
            handle = open(path, "a", encoding="utf-8")
            command = [nst_executable(), "table", TABLE, "--seeds", str(seed),
                       "--rows", row["key"]] + table_args
            handle.write("$ %s\n" % " ".join(command))
            handle.flush()
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
            _claim(logs, row, seed, process.pid)
            running.append((process, handle, seed, row, time.time()))
            log("study: [seed %d] %s started" % (seed, row["method"]))
        time.sleep(1.0)
        for seed, row in list(elsewhere):      # wait for them; take over if they died
            if _finished(run_folder(args.out_root, row, seed, spec)):
                elsewhere.remove((seed, row))
            elif not _claimed(logs, row, seed):
                elsewhere.remove((seed, row))
                pending.insert(0, (seed, row))
        for item in list(running):
            process, handle, seed, row, started = item
            if process.poll() is None:
                continue
            handle.close()
            running.remove(item)
            if process.returncode == 0:
                trained += 1
                result = _read_results(run_folder(args.out_root, row, seed, spec))
                log("study: [seed %d] %s finished in %.1f min: test top-1 error %.2f%%"
                    % (seed, row["method"], (time.time() - started) / 60.0,
                       result["test_top1_err"]))
            else:
                failed.append((seed, row))
                log("study: [seed %d] %s FAILED (exit %d), see %s/%s_seed%d.log"
                    % (seed, row["method"], process.returncode, logs, row["key"], seed))
    _add_time(study_dir, time.time() - tic, trained, args)
    if failed:
        raise NSTError("%d run(s) failed: %s; see their logs in %s and run the same command "
                       "again to resume" % (len(failed), ", ".join(
                           "%s seed %d" % (r["key"], s) for s, r in failed), logs))
    code = _call(["table", TABLE, "--seeds", args.seeds] + table_args)
    if code != 0:
        raise NSTError("writing the table over seeds failed (exit %d)" % code)
    return 0


def _claim_path(logs, row, seed):
    return os.path.join(logs, "%s_seed%d.pid" % (row["key"], seed))


def _claim(logs, row, seed, pid):
    """Mark a run as being trained by process ``pid`` (so a second study process started
    on the same folder leaves it alone)."""
    with open(_claim_path(logs, row, seed), "w", encoding="ascii") as handle:
        handle.write("%d\n" % pid)


def _claimed(logs, row, seed):
    """True while the process named in the run's claim file is alive."""
    try:
        with open(_claim_path(logs, row, seed), "r", encoding="ascii") as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:                                    # a finished child not yet reaped is a zombie
        with open("/proc/%d/stat" % pid, "r", encoding="ascii") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _add_time(study_dir, seconds, trained, args):
    """Accumulate the wall time of the invocations that trained something."""
    path = os.path.join(study_dir, "study_time.json")
    record = {"seconds": 0.0, "invocations": []}
    if os.path.isfile(path):
        record = read_json(path, "study timing", "delete it (the study's minutes restart at 0)")
    if trained:
        record["seconds"] += seconds
        record["invocations"].append({"seconds": seconds, "runs_trained": trained,
                                      "jobs": args.jobs, "omp_threads": _omp_threads(),
                                      "ended": time.strftime("%Y-%m-%d %H:%M:%S")})
        os.makedirs(study_dir, exist_ok=True)
        write_json(path, record)
    return record


def _omp_threads():
    from nst.runtime import operator_threads
    return operator_threads()[0]


def cpu_description():
    """CPU model and the cores this process may use, e.g. ``"Intel(R) Xeon(R) ... (2 cores)"``."""
    from nst.runtime import usable_cores
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%s (%d cores)" % (model, usable_cores())


# ---------------------------------------------------------------------------
# record
# ---------------------------------------------------------------------------

def collect(out_root, seeds, spec=None):
    """``{seed: {row key: results}}`` of the finished runs (teacher under every seed)."""
    spec = spec or _spec()
    teacher, students = _rows(spec)
    teacher_dir = run_folder(out_root, teacher, spec=spec)
    by_seed = {}
    for seed in seeds:
        found = {}
        if _finished(teacher_dir):
            found[teacher["key"]] = _read_results(teacher_dir)
        for row in students:
            folder = run_folder(out_root, row, seed, spec)
            if _finished(folder):
                found[row["key"]] = _read_results(folder)
        by_seed[seed] = found
    return by_seed


def summarise_study(out_root, seeds, spec=None):
    """The record's dict (the issue's shape, with more keys)."""
    from train.experiments import seed_summary

    spec = spec or _spec()
    by_seed = collect(out_root, seeds, spec)
    summary = seed_summary(TABLE, {"cifar10": by_seed})["cifar10"]
    teacher_row, students = _rows(spec)
    teacher_result = by_seed[seeds[0]].get(teacher_row["key"]) if seeds else None
    if teacher_result is None:
        raise NSTError("the study's teacher has not finished in %s; run "
                       "scripts/cifar_subset_study.sh first" % run_folder(out_root, teacher_row,
                                                                         spec=spec))
    rows = []
    for item in summary["rows"]:
        diff = item["diff_vs_student"] or {}
        rows.append({"name": item["name"], "key": item["key"], "seeds": item["seeds"],
                     "mean": item["mean"], "std": item["std"], "n": item["n"],
                     "diff_vs_student": {"mean": diff.get("mean"), "ci95": diff.get("ci95"),
                                         "std": diff.get("std"), "n": diff.get("n")}})
    student = next(r for r in rows if r["key"] == summary["baseline"])
    teacher_err = teacher_result["test_top1_err"]
    gap = None if student["mean"] is None else student["mean"] - teacher_err
    config = _run_config(run_folder(out_root, students[0], seeds[0], spec))
    teacher_cfg = _run_config(run_folder(out_root, teacher_row, spec=spec))
    timing_path = os.path.join(out_root, TABLE, "study_time.json")
    timing = None
    if os.path.isfile(timing_path):
        timing = read_json(timing_path, "study timing", "delete it (the study's minutes "
                           "restart at 0)")
    last_invocation = ((timing or {}).get("invocations") or [None])[-1]
    complete = all(len(r["seeds"]) == len(seeds) for r in rows)
    return {
        "teacher": {"network": teacher_result.get("student"), "model": teacher_row.get("model"),
                    "width": (teacher_cfg.get("student") or {}).get("params", {}).get("width"),
                    "epochs": teacher_result.get("epochs"), "test_top1_err": teacher_err},
        "student": {"network": (config.get("student") or {}).get("network"),
                    "model": next(r for r in spec["rows"] if r["key"] == "student").get("model"),
                    "width": (config.get("student") or {}).get("params", {}).get("width"),
                    "epochs": config.get("epochs")},
        "rows": rows,
        "seeds": [str(s) for s in seeds],
        "complete": complete,
        "teacher_gap": {"student_mean_minus_teacher": gap, "student_seed_std": student["std"],
                        "gap_over_std": (gap / student["std"]) if gap is not None
                        and student["std"] else None},
        "minutes": None if timing is None else timing["seconds"] / 60.0,
        "cpu": cpu_description(),
        "omp_threads": last_invocation.get("omp_threads") if last_invocation
        else _omp_threads(),
        "jobs": last_invocation.get("jobs") if last_invocation else None,
        "data": {"dataset": "cifar10", "root": (config.get("data") or {}).get("root"),
                 "train_images": _dataset_size(config, "train"),
                 "train_images_per_epoch": _train_images(run_folder(out_root, students[0],
                                                                    seeds[0], spec)),
                 "test_images": ((summary["teacher"] or {}).get("check_before_distilling")
                                 or {}).get("images")},
        "metric": "test top-1 error (%) after the last epoch",
        "batch_size": (config.get("data") or {}).get("batch_size"),
        "configs": "configs/study/cifar10_subset/ and the table cifar10_subset of "
                   "configs/tables.yaml",
        "command": "scripts/cifar_subset_study.sh",
    }


def _dataset_size(config, split):
    data = config.get("data") or {}
    if not data.get("root"):
        return None
    from train.data import load_dataset
    try:
        count = len(load_dataset(data.get("dataset", "cifar10"), data["root"], split)[1])
    except NSTError:
        return None
    limit = data.get("train_limit" if split == "train" else "test_limit")
    return min(count, limit) if limit else count


def _run_config(folder):
    from train.checkpoint import read_manifest
    return (read_manifest(folder) or {}).get("config") or {}


def _train_images(folder):
    from train.runlog import read_log
    history = read_log(folder)
    return history[0].get("train_images") if history else None


def format_record(record):
    """The Markdown of ``cifar10_subset.md``."""
    t = record["teacher"]
    s = record["student"]
    gap = record["teacher_gap"]
    lines = ["# CIFAR-10 subset study: does transfer work at CPU scale?", "",
             "Measured by `scripts/cifar_subset_study.sh`, rows and settings in %s; %s seeds "
             "(%s); %s; %s operator "
             "thread(s) per run, %s run(s) at a time; %s." % (
                 record["configs"], len(record["seeds"]), ", ".join(record["seeds"]),
                 record["cpu"], record["omp_threads"], record["jobs"] or "?",
                 "%.1f minutes wall time" % record["minutes"] if record["minutes"] else
                 "wall time not recorded"),
             "",
             "Teacher: %s (%s, width %s), %s epochs: **%.2f%%** test top-1 error.  Student: %s "
             "(%s, width %s), %s epochs per row.  Data: %s training / %s test images of "
             "CIFAR-10 (%s training images per epoch: full batches of %s)." % (t["model"], t["network"], t["width"], t["epochs"],
                            t["test_top1_err"], s["model"], s["network"], s["width"],
                            s["epochs"], record["data"]["train_images"],
                            record["data"]["test_images"],
                            record["data"]["train_images_per_epoch"], record["batch_size"]),
             ""]
    if gap["student_mean_minus_teacher"] is not None:
        lines += ["Teacher–student gap: the student alone is %.2f points worse than the teacher "
                  "(%s× its seed-to-seed std of %.2f)." % (
                      gap["student_mean_minus_teacher"],
                      "%.1f" % gap["gap_over_std"] if gap["gap_over_std"] else "—",
                      gap["student_seed_std"] or float("nan")), ""]
    head = ["Row", "test top-1 error, mean ± std", "per seed (%s)" % ", ".join(record["seeds"]),
            "Δ vs Student (paired), mean", "95% CI of Δ"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in record["rows"]:
        diff = row["diff_vs_student"]
        mean = "—" if row["mean"] is None else (
            "%.2f" % row["mean"] if row["std"] is None else "%.2f ± %.2f" % (row["mean"], row["std"]))
        per_seed = ", ".join("%.2f" % row["seeds"][k] if k in row["seeds"] else "—"
                             for k in record["seeds"])
        dmean = "—" if diff["mean"] is None else "%+.2f" % diff["mean"]
        ci = "—" if not diff["ci95"] else "[%+.2f, %+.2f]" % tuple(diff["ci95"])
        lines.append("| " + " | ".join([row["name"], mean, per_seed, dmean, ci]) + " |")
    lines.append("| Teacher (trained once) | %.2f | — | — | — |" % t["test_top1_err"])
    lines += ["",
              "Δ is the per-seed difference to the Student row (a seed fixes the student's "
              "initialisation and data order in every row), its mean and its 95% confidence "
              "interval from the t-distribution with n − 1 degrees of freedom; negative means "
              "lower error than the student trained alone.  An interval that contains 0 means "
              "this study cannot tell the row from the student.", ""]
    figures = record.get("figures") or {}
    if figures.get("curves"):
        lines += ["![curves](%s)" % figures["curves"], ""]
    if figures.get("tsne"):
        panels = (record.get("tsne") or {}).get("panels") or []
        lines += ["![t-SNE](%s)" % figures["tsne"], "",
                  "t-SNE of the teacher's and the students' neuron selectivity patterns (Fig. 5; "
                  "seed 0): MMD² (poly) " + ", ".join("%s %.4f" % (p["label"], p["mmd2"])
                                                     for p in panels) + ".", ""]
    if not record.get("complete", True):
        lines += ["**Incomplete:** some runs have not finished; rows list the seeds they have.",
                  ""]
    lines += ["Re-derive one number: `scripts/cifar_subset_study.sh --verify ROW SEED` (e.g. "
              "`--verify \"KD+NST (poly)\" 0`)."]
    return "\n".join(lines) + "\n"


def record_results(args, log=print):
    """Write ``<results>/cifar10_subset.{json,md}`` and the two PNGs."""
    from train.seeds import parse_seeds

    spec = _spec()
    seeds = parse_seeds(args.seeds)
    record = summarise_study(args.out_root, seeds, spec)
    os.makedirs(args.results, exist_ok=True)
    curves_png = os.path.join(args.results, TABLE + "_curves.png")
    tsne_png = os.path.join(args.results, TABLE + "_tsne.png")
    work = os.path.join(args.out_root, TABLE, "figures")
    os.makedirs(work, exist_ok=True)
    record["figures"] = {}
    rows = {r["key"]: r for r in spec["rows"]}
    curve_runs = [run_folder(args.out_root, rows[k], spec=spec) for k in CURVE_ROWS
                  if any(_finished(run_folder(args.out_root, rows[k], s, spec)) for s in seeds)]
    if curve_runs:
        labels = [rows[os.path.basename(os.path.normpath(p))]["method"] for p in curve_runs]
        code = _call(["curves"] + curve_runs + ["--labels"] + labels + [
            "--title", "CIFAR-10 subset: mean over seeds, train (dashed) / test (solid)",
            "-o", os.path.join(work, "curves.png")], os.path.join(work, "figures.log"))
        if code == 0:
            shutil.copyfile(os.path.join(work, "curves.png"), curves_png)
            record["figures"]["curves"] = os.path.basename(curves_png)
        else:
            log("study: nst curves failed (exit %d), see %s/figures.log" % (code, work))
    teacher = run_folder(args.out_root, next(r for r in spec["rows"]
                                             if r.get("role") == "teacher"), spec=spec)
    tsne_runs = [run_folder(args.out_root, rows[k], seeds[0], spec) for k in TSNE_ROWS]
    if all(_finished(p) for p in tsne_runs):
        tsne_json = os.path.join(work, "tsne.json")
        argv = ["tsne"] + tsne_runs + ["--teacher", teacher, "--labels",
                                       "Student (no transfer)", "KD+NST (poly)",
                                       "-o", os.path.join(work, "tsne.png"), "--json", tsne_json,
                                       "--no-progress"]
        if args.root:
            argv += ["--root", args.root]
        code = _call(argv, os.path.join(work, "figures.log"))
        if code == 0:
            shutil.copyfile(os.path.join(work, "tsne.png"), tsne_png)
            record["figures"]["tsne"] = os.path.basename(tsne_png)
            tsne = read_json(tsne_json, "t-SNE record", "see %s/figures.log" % work)
            record["tsne"] = {"seed": str(seeds[0]), "images": tsne["settings"]["images"],
                              "kernel": tsne["settings"]["kernel"],
                              "panels": [{"label": p["label"], "mmd2": p["mmd2"],
                                          "loss_mmd2": p["loss_mmd2"]}
                                         for p in tsne["panels"]]}
        else:
            log("study: nst tsne failed (exit %d), see %s/figures.log" % (code, work))
    json_path = os.path.join(args.results, TABLE + ".json")
    write_json(json_path, record)
    md_path = os.path.join(args.results, TABLE + ".md")
    text = format_record(record)
    write_text(md_path, text)
    log(text)
    log("written: %s, %s%s" % (json_path, md_path, "".join(
        ", " + os.path.join(args.results, f) for f in record["figures"].values())))
    return 0


# ---------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------

def verify(args, log=print):
    """Retrain one row for one seed; print the JSON line; 0 when within TOLERANCE."""
    spec = _spec()
    row = find_row(spec, args.row)
    if row.get("role") == "teacher":
        raise NSTError("--verify retrains a student row; the teacher is trained once (its "
                       "error is in the record as teacher.test_top1_err)")
    if not os.path.isfile(args.results_json):
        raise NSTError("no recorded study at %s; run scripts/cifar_subset_study.sh first or "
                       "give --results-json" % args.results_json)
    record = read_json(args.results_json, "recorded study", "restore it from git or rerun "
                       "scripts/cifar_subset_study.sh")
    recorded_row = next((r for r in record["rows"] if r.get("key") == row["key"]
                         or r["name"] == row["method"]), None)
    seed = int(args.seed)
    if recorded_row is None or str(seed) not in recorded_row["seeds"]:
        raise NSTError("%s has no recorded value for row %s, seed %d; recorded seeds: %s"
                       % (args.results_json, row["method"], seed,
                          ", ".join(sorted((recorded_row or {}).get("seeds", {}))) or "none"))
    recorded = float(recorded_row["seeds"][str(seed)])
    teacher_row = next(r for r in spec["rows"] if r.get("role") == "teacher")
    verify_root = args.verify_root
    table_args = _table_args(argparse.Namespace(out_root=verify_root, root=args.root,
                                                gpus=args.gpus, quick=args.quick))
    target = run_folder(verify_root, row, seed, spec)
    if os.path.isdir(target):
        shutil.rmtree(target)           # retrain, never reuse an earlier verification
    log_path = os.path.join(verify_root, TABLE, "logs", "verify_%s_seed%d.log" % (row["key"], seed))
    teacher_dir = run_folder(verify_root, teacher_row, spec=spec)
    recorded_teacher = run_folder(args.out_root, teacher_row, spec=spec)
    if row["key"] != spec.get("baseline", "student") and not _finished(teacher_dir):
        if _finished(recorded_teacher) and not args.retrain_teacher:
            os.makedirs(teacher_dir, exist_ok=True)
            for name in ("student.params", "results.json", "log.json", "checkpoint.json"):
                if os.path.isfile(os.path.join(recorded_teacher, name)):
                    shutil.copyfile(os.path.join(recorded_teacher, name),
                                    os.path.join(teacher_dir, name))
            log("verify: teacher from the recorded run %s" % recorded_teacher)
        else:
            log("verify: retraining the teacher (%s)" % teacher_row["model"])
            if _call(["table", TABLE, "--rows", teacher_row["key"]] + table_args,
                     log_path) != 0:
                raise NSTError("retraining the teacher failed; see %s" % log_path)
    log("verify: retraining %s, seed %d (log %s)" % (row["method"], seed, log_path))
    if _call(["table", TABLE, "--seeds", str(seed), "--rows", row["key"]] + table_args,
             log_path) != 0:
        raise NSTError("retraining %s failed; see %s" % (row["method"], log_path))
    measured = float(_read_results(target)["test_top1_err"])
    print(json.dumps({"row": row["method"], "seed": seed, "recorded": recorded,
                      "measured": measured}))
    return 0 if abs(measured - recorded) <= TOLERANCE else 1


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tools.study", description=__doc__.split(
        "\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)

    def common(p):
        p.add_argument("--out-root", default=None,
                       help="where the runs go (default runs/, runs/quick/ with --quick)")
        p.add_argument("--root", default=None, help="CIFAR-10 folder (default: the configs', "
                                                    "../shared/data)")
        p.add_argument("--gpus", default=None, help="comma-separated GPU ids")
        p.add_argument("--quick", action="store_true",
                       help="the tiny smoke-test version (configs/tables.yaml quick)")
        p.add_argument("--seeds", default="0,1,2", help="seeds (default 0,1,2)")

    p = sub.add_parser("train", help="train the teacher and every (seed, row) run")
    common(p)
    p.add_argument("--jobs", type=int, default=1, help="runs trained side by side (default 1)")
    p = sub.add_parser("record", help="write <results>/cifar10_subset.{json,md} and the PNGs")
    common(p)
    p.add_argument("--results", default=None,
                   help="where the record goes (default docs/results; runs/quick/results "
                        "with --quick, so that a smoke test never replaces the record)")
    p = sub.add_parser("verify", help="retrain one row for one seed and compare")
    common(p)
    p.add_argument("row", help='row key or name, e.g. kd_nst or "KD+NST (poly)"')
    p.add_argument("seed", type=int)
    p.add_argument("--results", default=None, help="the record's folder (default docs/results)")
    p.add_argument("--results-json", default=None,
                   help="the record to compare with (default <results>/cifar10_subset.json)")
    p.add_argument("--verify-root", default=None,
                   help="where the retrained run goes (default <out-root>/verify/)")
    p.add_argument("--retrain-teacher", action="store_true",
                   help="retrain the teacher even when the recorded run is here")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.out_root is None:
        args.out_root = os.path.join("runs", "quick") if args.quick else "runs"
    if args.action in ("record", "verify"):
        results = getattr(args, "results", None) or (
            os.path.join(args.out_root, "results") if args.quick else os.path.join("docs",
                                                                                   "results"))
        args.results = results
    if args.action == "verify":
        args.results_json = args.results_json or os.path.join(args.results, TABLE + ".json")
        args.verify_root = args.verify_root or os.path.join(args.out_root, "verify")
    if getattr(args, "jobs", 1) < 1:
        print("study: error: --jobs must be at least 1", file=sys.stderr)
        return 2
    try:
        if args.action == "train":
            return train(args)
        if args.action == "record":
            return record_results(args)
        return verify(args)
    except NSTError as err:
        print("study: error: %s" % err, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
