"""The project's layering: lower packages never import higher ones (docs/development.md).

nst (core) <- symbols (networks) <- train (data, losses, report, trainer) <- tools and
detection (detection may use tools' helpers such as tools.voc_eval) <- benchmarks.
Every import is read from the source with ``ast``, including the ones inside
functions, so an import placed lazily to dodge the rule is caught too.
"""

import ast
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("nst", "symbols", "train", "tools", "detection", "benchmarks")

# package -> project packages it must never import
FORBIDDEN = {
    "nst": {"symbols", "train", "tools", "detection", "benchmarks"},
    "symbols": {"train", "tools", "detection", "benchmarks"},
    "train": {"tools", "detection", "benchmarks"},
    "tools": {"detection", "benchmarks"},
    "detection": {"benchmarks"},
    "benchmarks": set(),
}


def _modules(package):
    return sorted((REPO / package).rglob("*.py"))


def _imported(path):
    """``(line, absolute module name)`` of every import in a file (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    package = parts[:-1]  # the package a relative import starts from (also for __init__)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.append((node.lineno, name))
    return found


def _violations(package):
    bad = []
    for path in _modules(package):
        for line, name in _imported(path):
            top = name.split(".")[0]
            if top in FORBIDDEN[package]:
                bad.append("%s:%d imports %s" % (path.relative_to(REPO), line, name))
    return bad


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_a_higher_one(package):
    assert _violations(package) == []


def test_the_rule_is_checked_on_real_imports(tmp_path, monkeypatch):
    """The checker sees lazy and relative imports (a checker that finds nothing proves nothing)."""
    fake = tmp_path / "train" / "sub"
    fake.mkdir(parents=True)
    (tmp_path / "train" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from tools.tsne import embed\n"
                                 "from .. import trainer\nimport detection.train as t\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert sorted(_violations("train")) == ["train/sub/bad.py:2 imports tools.tsne",
                                            "train/sub/bad.py:4 imports detection.train"]
    assert (3, "train") in _imported(fake / "bad.py")  # "from .. import" resolved


def test_the_trainer_reads_data_only_through_the_data_package():
    """train/trainer.py imports train.data itself, never one of its source modules."""
    names = [name for _, name in _imported(REPO / "train" / "trainer.py")]
    assert "train.data" in names
    assert [n for n in names if n.startswith("train.data.")] == []


def test_the_epoch_loop_lives_in_train_epochs_not_in_the_checkpoint_module():
    def epoch_loops(path):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        return [node.lineno for node in ast.walk(tree)
                if isinstance(node, ast.For) and isinstance(node.target, ast.Name)
                and node.target.id == "epoch"]

    assert epoch_loops(REPO / "train" / "checkpoint.py") == []
    assert epoch_loops(REPO / "train" / "epochs.py") != []
    for trainer in ("train/trainer.py", "detection/train.py"):
        text = (REPO / trainer).read_text(encoding="utf-8")
        assert "from train import epochs" in text and "epochs.run_epochs(" in text, trainer


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_says_in_its_first_line_what_it_holds(package):
    missing = []
    for path in _modules(package):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        first = (doc or "").split("\n")[0].strip()
        if len(first) < 20:
            missing.append(str(path.relative_to(REPO)))
    assert missing == []
