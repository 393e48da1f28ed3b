"""Config files: safe YAML, schema validation, extends and overrides."""

import os
import re

import pytest
import yaml

from nst.errors import NSTError
from train.config import load_config, validate_config
from train.experiments import row_config
from train.report.tables import CONFIG_DIR, load_tables, table_spec

MINIMAL = {"name": "x", "epochs": 1, "data": {"dataset": "digits"},
           "student": {"network": "inception_bn_small"}}


def write(path, data):
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_defaults_are_filled(tmp_path):
    cfg = load_config(write(tmp_path / "c.yaml", MINIMAL))
    assert cfg["optimizer"] == {"name": "nag", "lr": 0.2, "momentum": 0.9, "wd": 1e-4,
                                "no_wd": [], "lr_steps": [], "lr_factor": 0.1,
                                "warmup_epochs": 0, "clip_gradient": None}
    assert cfg["data"]["batch_size"] == 128 and cfg["teacher"] is None
    assert cfg["out"] == os.path.join("runs", "x")


@pytest.mark.parametrize("change, message", [
    ({"epoch": 3}, "unknown key 'epoch' (did you mean 'epochs'?)"),
    ({"data": {"dataset": "digits", "batchsize": 3}}, "unknown key 'data.batchsize'"),
    ({"epochs": "ten"}, "key 'epochs' must be an integer"),
    ({"optimizer": {"lr": "fast"}}, "key 'optimizer.lr' must be"),
    ({"data": {"dataset": "digits", "augment": "yes"}}, "must be true/false"),
    ({"transfer": [{"loss": "kd", "student": "logits", "teacher": "logits"}]},
     "there is no 'teacher' section"),
    ({"transfer": [{"loss": "kd", "student": "logits"}],
      "teacher": {"network": "a", "checkpoint": "b"}}, "missing required key 'transfer[0].teacher'"),
    ({"optimizer": {"lr_steps": [0]}}, "lr_steps"),
    ({"epochs": 0}, "at least 1"),
])
def test_bad_configs_give_one_clear_error(tmp_path, change, message):
    data = dict(MINIMAL)
    data.update(change)
    with pytest.raises(NSTError, match=re.escape(message)):
        load_config(write(tmp_path / "c.yaml", data))


def test_python_tags_are_refused_without_running_anything(tmp_path):
    marker = tmp_path / "pwned"
    text = "name: !!python/object/apply:os.system ['touch %s']\nepochs: 1\n" % marker
    with pytest.raises(NSTError, match="not valid YAML"):
        load_config(write(tmp_path / "c.yaml", text))
    assert not marker.exists()


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(NSTError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(NSTError, match="mapping"):
        load_config(write(tmp_path / "c.yaml", "- a\n- b\n"))


def test_extends_merges_and_overrides_apply(tmp_path):
    write(tmp_path / "base.yaml", dict(MINIMAL, optimizer={"lr": 0.5, "lr_steps": [2]}))
    child = write(tmp_path / "child.yaml", {"extends": "base.yaml", "name": "child",
                                            "optimizer": {"lr": 0.1}})
    cfg = load_config(child, overrides=["epochs=7", "data.batch_size=16"])
    assert cfg["name"] == "child" and cfg["epochs"] == 7
    assert cfg["optimizer"]["lr"] == 0.1 and cfg["optimizer"]["lr_steps"] == [2]
    assert cfg["data"]["batch_size"] == 16
    with pytest.raises(NSTError, match="key=value"):
        load_config(child, overrides=["epochs"])


def test_extends_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", {"extends": "b.yaml"})
    write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(NSTError, match="extends itself"):
        load_config(str(tmp_path / "a.yaml"))


def test_every_shipped_config_is_valid():
    # every trainer config (configs/voc/ holds the detector's, tested in test_detection)
    paths = sorted(p for p in CONFIG_DIR.rglob("*.yaml")
                   if p.name != "tables.yaml" and p.parent.name != "voc")
    assert len(paths) >= 20
    for path in paths:
        cfg = load_config(str(path))
        for entry in cfg["transfer"]:
            assert entry["student"] and entry["teacher"]


def test_paper_configs_follow_the_paper():
    kd_nst = load_config(str(CONFIG_DIR / "cifar10" / "kd_nst.yaml"))
    assert kd_nst["optimizer"] == {"name": "nag", "lr": 0.2, "momentum": 0.9, "wd": 1e-4,
                                   "no_wd": ["beta", "bias"], "lr_steps": [200, 300],
                                   "lr_factor": 0.1, "warmup_epochs": 0, "clip_gradient": None}
    assert kd_nst["epochs"] == 400 and kd_nst["data"]["batch_size"] == 128
    assert [(t["loss"], t["weight"]) for t in kd_nst["transfer"]] == [("kd", 16), ("nst_poly", 50)]
    assert kd_nst["student"]["network"] == "inception_bn_small"
    assert kd_nst["teacher"]["network"] == "preact_resnet1001_cifar"
    c100 = load_config(str(CONFIG_DIR / "cifar100" / "nst_gaussian.yaml"))
    assert c100["data"]["dataset"] == "cifar100"
    assert c100["teacher"]["checkpoint"] == "runs/cifar100/teacher/student.params"
    assert c100["transfer"][0]["weight"] == 100


def test_tables_reference_existing_configs_and_quick_rows_are_valid():
    tables = load_tables()
    for name, spec in tables.items():
        for dataset in spec["datasets"]:
            for row in spec["rows"]:
                cfg = row_config(spec, row, dataset, "runs/x", quick=True)
                if cfg["teacher"] is not None:
                    assert cfg["teacher"]["checkpoint"].startswith(os.path.join("runs/x"))
    spec = table_spec("table1")
    cfg = row_config(spec, spec["rows"][1], "cifar10", "out", data_root="d", quick=True)
    assert cfg["epochs"] == 3 and cfg["student"]["params"] == {"width": 0.25}
    assert cfg["data"]["root"] == "d" and cfg["out"] == os.path.join("out", "cifar10", "kd")
    with pytest.raises(NSTError, match="unknown table"):
        table_spec("table9")


def test_validate_config_rejects_non_mapping_section():
    with pytest.raises(NSTError, match="must be a mapping"):
        validate_config(dict(MINIMAL, data=[1, 2]))


# ------------------------------------------------------------------ fuzzing
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SAMPLE = (CONFIG_DIR / "cifar10" / "kd_nst.yaml").read_bytes()


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=400),
    st.integers(0, len(SAMPLE)).map(lambda n: SAMPLE[:n]),
    st.tuples(st.integers(0, len(SAMPLE) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda p: SAMPLE[:p[0]] + p[1] + SAMPLE[p[0] + len(p[1]):])))
def test_config_loader_fuzz_only_returns_data_or_a_clear_error(tmp_path, data):
    """Random bytes, truncations and byte flips of a real config: the loader
    returns a validated mapping or raises the project's own error, never
    anything else (no YAMLError, KeyError, TypeError, UnicodeDecodeError...)."""
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    # `extends: student.yaml` must resolve next to the fuzzed file
    (tmp_path / "student.yaml").write_bytes((CONFIG_DIR / "cifar10" / "student.yaml").read_bytes())
    try:
        cfg = load_config(str(path))
    except NSTError as err:
        assert str(err)
    else:
        assert isinstance(cfg, dict) and cfg["epochs"] >= 1


def test_alias_bombs_and_deep_nesting_are_refused(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n" \
           "c: [*b, *b, *b, *b, *b, *b, *b, *b]\nname: x\nepochs: 1\n"
    with pytest.raises(NSTError, match="aliases"):
        load_config(write(tmp_path / "bomb.yaml", bomb))
    with pytest.raises(NSTError, match="nested too deeply|not valid YAML"):
        load_config(write(tmp_path / "deep.yaml", "a: " + "[" * 1200 + "]" * 1200 + "\n"))


def test_overrides_reach_list_items(tmp_path):
    data = dict(MINIMAL, teacher={"network": "a", "checkpoint": "b"},
                transfer=[{"loss": "kd", "student": "logits", "teacher": "logits"}])
    path = write(tmp_path / "c.yaml", data)
    cfg = load_config(path, overrides=["transfer.0.end_epoch=1", "transfer.0.weight=2"])
    assert cfg["transfer"][0]["end_epoch"] == 1 and cfg["transfer"][0]["weight"] == 2
    with pytest.raises(NSTError, match="not an index"):
        load_config(path, overrides=["transfer.3.weight=2"])


def _scalar_keys(schema, prefix=""):
    for key, spec in schema.items():
        if isinstance(spec, dict):
            yield from _scalar_keys(spec, prefix + key + ".")
        elif bool not in (spec[0] if isinstance(spec[0], tuple) else (spec[0],)):
            yield prefix + key


def _numeric_keys():
    from train.config import SCHEMA, TRANSFER_SCHEMA
    keys = [k for k in _scalar_keys(SCHEMA) if k != "extends"]
    keys += ["transfer.0." + k for k in _scalar_keys(TRANSFER_SCHEMA)]
    return keys


@pytest.mark.parametrize("key", _numeric_keys())
@pytest.mark.parametrize("value", [True, False])
def test_true_or_false_is_refused_where_a_number_or_string_is_expected(tmp_path, key, value):
    """YAML's true/yes/on is a bool, and Python's bool is an int: a schema key that is
    not true/false must refuse it (``epochs: true`` would otherwise train 1 epoch)."""
    data = {"name": "x", "epochs": 1, "data": {"dataset": "digits"},
            "student": {"network": "inception_bn_small"},
            "teacher": {"network": "a", "checkpoint": "b"},
            "transfer": [{"loss": "kd", "student": "logits", "teacher": "logits"}]}
    node, parts = data, key.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[parts[-1]] = value
    with pytest.raises(NSTError, match=re.escape(key.replace("transfer.0.", "transfer[0].")) +
                       "|" + re.escape(parts[-1])):
        load_config(write(tmp_path / "c.yaml", data))


def test_yaml_spellings_of_true_are_refused_for_integers(tmp_path):
    for text in ("true", "yes", "on", "True"):
        path = write(tmp_path / "c.yaml", "name: x\nepochs: %s\ndata: {dataset: digits}\n"
                     "student: {network: inception_bn_small}\n" % text)
        with pytest.raises(NSTError, match="key 'epochs' must be an integer, got True"):
            load_config(path)
    with pytest.raises(NSTError, match="data.batch_size"):
        load_config(write(tmp_path / "c.yaml", dict(MINIMAL)), overrides=["data.batch_size=true"])
