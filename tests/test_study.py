"""Seeds, aggregation and the CIFAR-10 subset study (scripts/cifar_subset_study.sh).

* mean ± std and the paired difference's 95% t-interval against numbers
  computed by hand (t_{0.975,2} = 4.302652729911275, from a t table);
* the paired-seed design: for one seed every row starts from the same student
  weights and sees the same batches, and another seed changes both;
* ``--verify`` on a tiny row (one epoch on 128 synthetic images): a wrong
  recorded value fails, the measured one then passes exactly (the engine is
  deterministic);
* the mean-over-seeds curves and the table over seeds.
"""

import json
import math
import os

import mxnet as mx
import numpy as np
import pytest

from nst.errors import NSTError
from train import experiments
from train.report.tables import table_spec
from train.seeds import aggregate_rows, paired_difference, parse_seeds, summarise

T_975_2 = 4.302652729911275      # Student's t, 97.5% quantile, 2 degrees of freedom (table value)


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3-5") == [3, 4, 5]
    assert parse_seeds("2, 0,2") == [2, 0]
    for bad in ("", "a", "1,-2", "5-x"):
        with pytest.raises(NSTError, match="--seeds"):
            parse_seeds(bad)


def test_summary_and_paired_interval_against_hand_computation():
    student = {"0": 31.0, "1": 33.0, "2": 32.0}
    row = {"0": 29.0, "1": 32.0, "2": 30.0}
    s = summarise(student.values())
    assert s["n"] == 3 and s["mean"] == pytest.approx(32.0) and s["std"] == pytest.approx(1.0)
    # differences -2, -1, -2: mean -5/3, sample std sqrt((1/9 + 4/9 + 1/9) / 2) = sqrt(1/3)
    d = paired_difference(row, student)
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(-5.0 / 3.0)
    assert d["std"] == pytest.approx(math.sqrt(1.0 / 3.0))
    half = T_975_2 * math.sqrt(1.0 / 3.0) / math.sqrt(3.0)
    assert d["ci95"] == pytest.approx([-5.0 / 3.0 - half, -5.0 / 3.0 + half])
    assert d["ci95"] == pytest.approx([-3.1009, -0.2324], abs=1e-4)
    # only common seeds pair; one seed has no interval
    one = paired_difference({"0": 29.0, "7": 1.0}, student)
    assert one["n"] == 1 and one["mean"] == pytest.approx(-2.0) and one["ci95"] is None
    assert summarise([4.0])["std"] is None


def test_aggregate_rows_keeps_teacher_apart_and_baseline_at_zero():
    rows = [{"key": "teacher", "method": "Teacher", "role": "teacher"},
            {"key": "student", "method": "Student"}, {"key": "kd", "method": "KD"}]
    by_seed = {0: {"teacher": {"test_top1_err": 20.0}, "student": {"test_top1_err": 31.0},
                   "kd": {"test_top1_err": 29.0}},
               1: {"teacher": {"test_top1_err": 20.0}, "student": {"test_top1_err": 33.0},
                   "kd": {"test_top1_err": 32.0}},
               2: {"teacher": {"test_top1_err": 20.0}, "student": {"test_top1_err": 32.0},
                   "kd": {"test_top1_err": 30.0}}}
    out = {r["key"]: r for r in aggregate_rows(rows, by_seed)}
    assert out["teacher"]["mean"] == 20.0 and out["teacher"]["diff_vs_student"] is None
    assert out["student"]["diff_vs_student"]["mean"] == 0.0
    assert out["student"]["diff_vs_student"]["ci95"] == [0.0, 0.0]
    assert out["kd"]["seeds"] == {"0": 29.0, "1": 32.0, "2": 30.0}
    assert out["kd"]["diff_vs_student"]["ci95"][1] == pytest.approx(
        -5.0 / 3.0 + T_975_2 / 3.0)


def test_table_over_seeds_markdown_and_json(tmp_path):
    spec = table_spec("cifar10_subset")
    by_seed = {}
    for seed, (s_err, k_err) in enumerate([(31.0, 29.0), (33.0, 32.0), (32.0, 30.0)]):
        by_seed[seed] = {"teacher": {"test_top1_err": 20.0, "student": "preact_resnet20_cifar"},
                         "student": {"test_top1_err": s_err}, "kd": {"test_top1_err": k_err}}
    text, summary = experiments.write_seed_outputs("cifar10_subset", {"cifar10": by_seed},
                                                   str(tmp_path))
    item = summary["cifar10"]
    assert item["teacher"]["test_top1_err"] == 20.0
    assert [r["key"] for r in item["rows"]] == [r["key"] for r in spec["rows"]
                                                if r.get("role") != "teacher"]
    assert "| KD | Inception-BN-small x1/8 | 30.33 ± 1.53 | 29.00, 32.00, 30.00 | -1.67 " \
           "[-3.10, -0.23] |" in text
    assert "| NST (poly) |" in text and "not run" in text
    saved = json.loads((tmp_path / "cifar10_subset_seeds.json").read_text())
    assert saved["summary"]["cifar10"]["rows"][1]["diff_vs_student"]["n"] == 3


def test_mean_curves_and_seed_folders(tmp_path):
    from tools.curves import make_curves_figure, seed_runs
    from train.report.curves import mean_curves

    logs = [[{"epoch": 1, "train_top1_err": 60.0 + s, "test_top1_err": 50.0 + 2 * s},
             {"epoch": 2, "train_top1_err": 40.0 + s, "test_top1_err": 30.0 + 2 * s}]
            for s in range(3)]
    curves = mean_curves(logs)
    assert curves["epochs"] == [1, 2] and curves["test_mean"] == [52.0, 32.0]
    assert curves["test_std"] == pytest.approx([2.0, 2.0])          # 50, 52, 54: std 2
    assert curves["train_mean"] == [61.0, 41.0]
    row = tmp_path / "kd"
    for s, log in enumerate(logs):
        (row / ("seed%d" % s)).mkdir(parents=True)
        (row / ("seed%d" % s) / "log.json").write_text(json.dumps(log))
    (row / "seedx").mkdir()
    assert [os.path.basename(p) for p in seed_runs(str(row))] == ["seed0", "seed1", "seed2"]
    result = make_curves_figure([str(row)], str(tmp_path / "c.png"), labels=["KD"],
                                log=lambda *a: None)
    assert result["mean_over_seeds"] and os.path.getsize(tmp_path / "c.png") > 1000
    assert result["runs"][0]["final_test_per_seed"] == [30.0, 32.0, 34.0]


def _distiller(spec, key, root, out_root, seed, teacher_params):
    from train.trainer import Distiller

    row = next(r for r in spec["rows"] if r["key"] == key)
    overrides = {"teacher.checkpoint": teacher_params} if key != "student" else {}
    cfg = experiments.row_config(spec, row, "cifar10", str(out_root), data_root=str(root),
                                 quick=True, overrides=overrides, seed=seed)
    assert cfg["seed"] == seed and cfg["out"].endswith("seed%d" % seed)
    return Distiller(cfg, [mx.cpu()], progress=False, log=lambda *a: None)


def test_same_seed_same_init_and_data_order_in_every_row(make_cifar10, tmp_path):
    import symbols

    root = make_cifar10(tmp_path / "data", per_file=30, test=20)
    teacher = symbols.get_model("preact_resnet11_cifar", classes=10, width=0.25)
    teacher.initialize(mx.init.Xavier())
    teacher(mx.nd.zeros((1, 3, 32, 32)))
    params = str(tmp_path / "teacher.params")
    teacher.save_parameters(params)
    spec = table_spec("cifar10_subset")

    def state(key, seed):
        d = _distiller(spec, key, root, tmp_path / "runs", seed, params)
        weights = {k[len(d.student.prefix):]: v.data().asnumpy()
                   for k, v in d.student.collect_params().items()}
        batches = [b for _, b in zip(range(2), d.train_batches.iter_epoch(0))]
        order = [(np.asarray(x), np.asarray(y)) for x, y in batches]
        return weights, order

    base_w, base_order = state("student", 1)
    for key in ("kd", "fitnet"):       # fitnet: a loss with its own parameters
        w, order = state(key, 1)
        assert sorted(w) == sorted(base_w)
        assert all(np.array_equal(w[k], base_w[k]) for k in w), key
        assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
                   for a, b in zip(order, base_order)), key
    other_w, other_order = state("student", 2)
    assert not all(np.array_equal(other_w[k], base_w[k]) for k in base_w)
    assert not np.array_equal(other_order[0][1], base_order[0][1])


def test_verify_a_tiny_row(make_cifar10, tmp_path, capsys):
    from tools import study

    root = make_cifar10(tmp_path / "data", per_file=30, test=20)
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"rows": [{"name": "Student", "key": "student",
                                            "seeds": {"0": 1.0}}]}))
    argv = ["verify", "Student", "0", "--quick", "--root", str(root), "--out-root",
            str(tmp_path / "runs"), "--results-json", str(record)]
    assert study.main(argv) == 1                        # 1.0% is not what this row gives
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["row"] == "Student" and line["seed"] == 0 and line["recorded"] == 1.0
    measured = line["measured"]
    assert abs(measured - 1.0) > 0.5
    record.write_text(json.dumps({"rows": [{"name": "Student", "key": "student",
                                            "seeds": {"0": measured}}]}))
    assert study.main(argv) == 0                        # retrained again: exactly equal
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == {"row": "Student", "seed": 0, "recorded": measured, "measured": measured}
    assert study.main(["verify", "no_such_row", "0", "--quick", "--root", str(root),
                       "--results-json", str(record)]) == 2
