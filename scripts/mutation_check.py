#!/usr/bin/env python
"""Mutation check: is each bug that matters caught by the test suite?  (Issue 15.)

For every mutation below, a fresh copy of the repository (without ``.git``,
virtual environments and run folders) gets ONE precise text substitution --
the mutation -- and the named tests are run in that copy with this
interpreter.  A mutation is *caught* when those tests fail.  The result is a
Markdown table (mutation -> failing tests, or NOT CAUGHT), printed and, with
``--out``, written to a file.  The repository itself is never modified.

This is a maintenance tool, not part of the test suite::

    nice -n 10 .venv/bin/python scripts/mutation_check.py \\
        --out docs/results/mutation_table.md            # ~15-25 min on 2 cores
    .venv/bin/python scripts/mutation_check.py --list   # the mutations
    .venv/bin/python scripts/mutation_check.py --only lr_late top5_k4

Without ``--shared`` the copy has no ``../shared`` beside it, so tests that
need the real CIFAR-10 subset skip: what is caught then is caught without
it.  ``--shared`` points ``NST_SHARED_DATA`` at ``/work/shared/data`` (or
the value given).  A mutation whose original text is no longer in the file
(the code changed) is reported as ``NOT APPLIED``: update its text here.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import namedtuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = shutil.ignore_patterns(".git", ".venv*", "runs", "__pycache__", ".pytest_cache",
                                ".hypothesis", "*.egg-info")

Mutation = namedtuple("Mutation", "name description path old new tests")

MUTATIONS = [
    Mutation("lambda_halved", "weight λ halved in the differentiated total (not in the log)",
             "train/trainer.py",
             "total = total + (term.weight * n) * value",
             "total = total + (term.weight * 0.5 * n) * value",
             ["tests/test_objective.py"]),
    Mutation("lr_late", "LR step one update late", "train/trainer.py",
             'steps = [epoch * self.steps_per_epoch for epoch in ocfg["lr_steps"]]',
             'steps = [epoch * self.steps_per_epoch + 1 for epoch in ocfg["lr_steps"]]',
             ["tests/test_trainer.py", "-k", "learning_rate"]),
    Mutation("lr_early", "LR step one update early", "train/trainer.py",
             'steps = [epoch * self.steps_per_epoch for epoch in ocfg["lr_steps"]]',
             'steps = [epoch * self.steps_per_epoch - 1 for epoch in ocfg["lr_steps"]]',
             ["tests/test_trainer.py", "-k", "learning_rate"]),
    Mutation("top5_k4_train", "training-time top-5 computed with k = 4", "train/trainer.py",
             "k = min(5, logits.shape[1])", "k = min(4, logits.shape[1])",
             ["tests/test_trainer.py", "-k", "known_logits"]),
    Mutation("top5_k4_eval", "evaluation top-5 computed with k = 4", "train/trainer.py",
             "mx.metric.TopKAccuracy(top_k=min(5, self.classes))",
             "mx.metric.TopKAccuracy(top_k=min(4, self.classes))",
             ["tests/test_trainer.py", "-k", "known_logits"]),
    Mutation("replicas_summed", "replicas summed instead of averaged at the epoch end",
             "train/trainer.py",
             "scale = 1.0 / len(copies)", "scale = 1.0",
             ["tests/test_dist.py", "-k", "epoch_end"]),
    Mutation("dist_no_aggregation", "dist_sync gradient aggregation switched off",
             "train/trainer.py",
             "self.trainer = gluon.Trainer(params, ocfg[\"name\"], opt_params, kvstore=self.kv,",
             "self.trainer = gluon.Trainer(params, ocfg[\"name\"], opt_params, "
             "kvstore=None if self.num_workers > 1 else self.kv,",
             ["tests/test_dist.py", "-k", "dist_sync"]),
    Mutation("flip_ignored", "data.flip ignored (always flipping)", "train/data/batches.py",
             'flip=dcfg.get("flip", True))', "flip=True)",
             ["tests/test_data.py", "-k", "flip_setting"]),
    Mutation("eval_on_train", "evaluation run on the training split", "train/trainer.py",
             "batches = batches or self.test_batches",
             "batches = batches or self.train_batches",
             ["tests/test_trainer.py", "-k", "test_split"]),
    Mutation("eval_source_train", "the data source's test iterator built from the training "
             "split", "train/data/batches.py",
             "test = ArrayBatches(test_x, test_y,",
             "test = ArrayBatches(train_x, train_y,",
             ["tests/test_trainer.py", "-k", "test_split"]),
    Mutation("inception_avg_to_max", "Inception-BN average-pool branches turned into max-pool",
             "symbols/inception_bn.py",
             'nn.AvgPool2D(3, 1, 1) if pool == "avg" else nn.MaxPool2D(3, 1, 1)',
             "nn.MaxPool2D(3, 1, 1)",
             ["tests/test_fidelity.py", "-k", "inception_bn"]),
    Mutation("engine_not_set", "deterministic-engine set-up of `nst` disabled", "nst/cli.py",
             'os.environ["MXNET_ENGINE_TYPE"] = "NaiveEngine"',
             "pass  # mutated",
             ["tests/test_long_runs.py", "-k", "naive_engine", "tests/test_compat.py"]),
    Mutation("cifar_interleaved", "CIFAR records read channel-interleaved", "train/data/cifar.py",
             "data.reshape(count, 3, 32, 32).transpose(0, 2, 3, 1)",
             "data.reshape(count, 32, 32, 3)",
             ["tests/test_data.py", "-k", "synthetic_records"]),
    Mutation("crd_resume_bug", "CRD resume bug reintroduced (generator seeded per epoch only)",
             "train/trainer.py",
             'seed_step(cfg["seed"], epoch, step_in_epoch, self.rank)',
             'mx.random.seed(cfg["seed"] + epoch) if step_in_epoch == start_step else None',
             ["tests/test_resume_all.py", "-k", "crd_resumed"]),
    Mutation("detection_lr_scaled", "detection LR scaled (x2) instead of GluonCV's unscaled lr",
             "detection/train.py",
             'base_lr = o["lr"]  # never scaled',
             'base_lr = o["lr"] * 2  # never scaled',
             ["tests/test_detection.py", "-k", "gluoncv"]),
    Mutation("detection_box_doubled", "detection R-CNN box loss doubled", "detection/train.py",
             "rcnn_loss2 = self.rcnn_box_loss(box_pred, box_targets, box_masks)",
             "rcnn_loss2 = 2 * self.rcnn_box_loss(box_pred, box_targets, box_masks)",
             ["tests/test_detection.py", "-k", "gluoncv"]),
]


def applies(root, mutation):
    """True when the mutation's text occurs exactly once in its file under ``root``."""
    with open(os.path.join(root, mutation.path), encoding="utf-8") as handle:
        return handle.read().count(mutation.old) == 1


def apply(copy_root, mutation):
    """Apply one mutation (its text occurs once, :func:`applies`) in the copy."""
    path = os.path.join(copy_root, mutation.path)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace(mutation.old, mutation.new))


def run_tests(copy_root, tests, shared, timeout):
    env = dict(os.environ, PYTHONPATH=copy_root, PYTHONDONTWRITEBYTECODE="1")
    env.pop("NST_FAULT", None)
    if shared:
        env["NST_SHARED_DATA"] = shared
    else:
        env["NST_SHARED_DATA"] = os.path.join(copy_root, "no-shared-data")
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"] + tests
    try:
        proc = subprocess.run(command, cwd=copy_root, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timed out after %d s" % timeout
    output = proc.stdout + proc.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, flags=re.M)
    summary = (output.strip().splitlines() or [""])[-1]
    return proc.returncode, failed or [summary]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="mutation names to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--shared", nargs="?", const="/work/shared/data", default=None,
                        help="let tests use the real data at this folder")
    parser.add_argument("--baseline", action="store_true",
                        help="also run each mutation's tests on the unmutated copy first")
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--out", help="write the Markdown table here")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print("%-22s %s  [%s]" % (m.name, m.description, " ".join(m.tests)))
        return 0
    rows = []
    work = tempfile.mkdtemp(prefix="nst_mutation_")
    try:
        for mutation in chosen:
            if not applies(REPO, mutation):  # the copy would be identical: do not make it
                rows.append((mutation, "NOT APPLIED (text not found in %s)" % mutation.path,
                             0.0))
                print("%-22s %s" % (mutation.name, rows[-1][1]), flush=True)
                continue
            copy_root = os.path.join(work, mutation.name)
            shutil.copytree(REPO, copy_root, ignore=IGNORE)
            tic = time.time()
            if args.baseline:
                code, failed = run_tests(copy_root, mutation.tests, args.shared, args.timeout)
                if code != 0:
                    rows.append((mutation, "BASELINE FAILS: %s" % ", ".join(failed), 0.0))
                    print(rows[-1][1], flush=True)
                    shutil.rmtree(copy_root, ignore_errors=True)
                    continue
            apply(copy_root, mutation)
            code, failed = run_tests(copy_root, mutation.tests, args.shared, args.timeout)
            if code is None:
                verdict = "UNDECIDED (%s)" % failed
            elif code == 0:
                verdict = "NOT CAUGHT"
            elif code == 5:
                verdict = "NOT CAUGHT (no test collected)"
            else:
                verdict = "caught by " + ", ".join("`%s`" % f for f in failed)
            rows.append((mutation, verdict, time.time() - tic))
            print("%-22s %s (%.0f s)" % (mutation.name, verdict, rows[-1][2]), flush=True)
            shutil.rmtree(copy_root, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = ["| mutation | file | tests run | result |", "|---|---|---|---|"]
    for mutation, verdict, _seconds in rows:
        table.append("| %s (`%s`) | `%s` | `%s` | %s |"
                     % (mutation.description, mutation.name, mutation.path,
                        " ".join(mutation.tests), verdict))
    text = "\n".join(table) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0 if all(v.startswith("caught") for _m, v, _s in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
