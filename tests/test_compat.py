"""nst.compat: the NumPy aliases MXNet 1.9.1 needs are restored only where missing,
only on NumPy >= 1.24, and before MXNet wherever the project imports it."""

import builtins
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy
import pytest

from nst import compat

REPO = Path(__file__).resolve().parents[1]


def fake_numpy(version, **present):
    """A stand-in for the numpy module: ``__version__`` and only the given attributes."""
    module = types.ModuleType("fake_numpy")
    module.__version__ = version
    for name, value in present.items():
        setattr(module, name, value)
    return module


@pytest.mark.parametrize("text, expected", [
    ("1.23.5", (1, 23)), ("1.26.4", (1, 26)), ("1.24.0rc1", (1, 24)), ("1.9.3", (1, 9)),
    ("2.0.0.dev0+git123", (2, 0)), ("1.25", (1, 25)), ("2", (2, 0)),
])
def test_numpy_version_is_numeric(text, expected):
    assert compat.numpy_version(text) == expected
    # numeric, not string, order: 1.9 < 1.24 < 1.100
    assert compat.numpy_version("1.9.0") < compat.FIRST_WITHOUT_ALIASES < compat.numpy_version("1.100")


@pytest.mark.parametrize("version", ["1.16.6", "1.20.3", "1.23.5", "1.9.0"])
def test_noop_below_1_24(version):
    module = fake_numpy(version)
    assert compat.restore_numpy_aliases(module) == []
    for name in compat.REMOVED_ALIASES:
        assert not hasattr(module, name)


@pytest.mark.parametrize("version", ["1.24.0", "1.26.4", "1.25.2"])
def test_restores_every_missing_alias(version):
    module = fake_numpy(version)
    assert compat.restore_numpy_aliases(module) == list(compat.REMOVED_ALIASES)
    assert (module.bool, module.int, module.float, module.object, module.str, module.complex) \
        == (bool, int, float, object, str, complex)
    # a second call finds nothing missing
    assert compat.restore_numpy_aliases(module) == []


def test_present_aliases_are_left_alone():
    sentinel = object()
    module = fake_numpy("1.26.4", int=sentinel, str=sentinel)
    assert compat.restore_numpy_aliases(module) == ["bool", "float", "object", "complex"]
    assert module.int is sentinel and module.str is sentinel
    assert module.bool is bool and module.complex is complex


def test_version_override_is_used():
    module = fake_numpy("1.26.4")
    assert compat.restore_numpy_aliases(module, version="1.23.5") == []
    assert not hasattr(module, "int")


def test_real_numpy_state_matches_its_version():
    """In this interpreter: below 1.24 nothing was set (the deprecated aliases are still
    numpy's own, not entries of its namespace); from 1.24 on all six are the builtins."""
    if compat.numpy_version() < compat.FIRST_WITHOUT_ALIASES:
        assert compat.RESTORED == []
        assert not any(name in vars(numpy) for name in compat.REMOVED_ALIASES)
    else:
        for name in compat.REMOVED_ALIASES:
            assert getattr(numpy, name) is getattr(builtins, name)


# Run in a fresh interpreter: make the six aliases missing from the real numpy
# (NumPy >= 1.24: they are; NumPy < 1.24: drop them from its deprecated-name table
# and report version 1.24.0), then import one package of the project and check that
# the aliases came back (and, for nst.compat alone, that MXNet then imports and computes;
# the other packages' imports are light: one MXNet start is enough).
HIDE_ALIASES = """
import numpy, sys
names = ("bool", "int", "float", "object", "str", "complex")
table = getattr(numpy, "__deprecated_attrs__", {})
for name in names:
    table.pop(name, None)
    numpy.__dict__.pop(name, None)
if tuple(int(p) for p in numpy.__version__.split(".")[:2]) < (1, 24):
    numpy.__version__ = "1.24.0"
assert not any(hasattr(numpy, name) for name in names), "aliases still present"
import %(package)s
missing = [name for name in names if not hasattr(numpy, name)]
assert not missing, "%(package)s did not restore %%s" %% missing
assert numpy.int is int and numpy.bool is bool and numpy.object is object
if %(compute)s:
    import mxnet
    print(float(mxnet.nd.ones((2, 3)).sum().asscalar()))
print("restored")
"""


def run_python(code):
    env = dict(os.environ, PYTHONPATH=str(REPO), MXNET_ENGINE_TYPE="NaiveEngine")
    return subprocess.run([sys.executable, "-c", code], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("package", ["nst.compat", "symbols", "train", "tools", "detection",
                                     "benchmarks"])
def test_package_import_restores_aliases_before_mxnet(package):
    compute = package == "nst.compat"
    proc = run_python(HIDE_ALIASES % {"package": package, "compute": compute})
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = ["6.0", "restored"] if compute else ["restored"]
    assert proc.stdout.split()[-len(expected):] == expected


def test_without_compat_the_simulation_breaks_mxnet():
    """The simulation above is real: with the aliases missing and no nst.compat,
    ``import mxnet`` fails the way it does on NumPy >= 1.24."""
    code = HIDE_ALIASES.split("import %(package)s")[0] + "import mxnet\n"
    proc = run_python(code)
    assert proc.returncode != 0
    assert "has no attribute" in proc.stderr and "numpy" in proc.stderr


def test_nst_command_restores_aliases_before_mxnet():
    """``nst.cli`` imports mxnet itself (to start the deterministic engine muted);
    compat must come first there too."""
    code = HIDE_ALIASES.split("import %(package)s")[0] + (
        "import os\nos.environ.pop('MXNET_ENGINE_TYPE', None)\n"
        "from nst.cli import use_deterministic_engine\n"
        "use_deterministic_engine([])\n"
        "assert 'mxnet' in sys.modules and numpy.int is int\n"
        "import mxnet\nprint(float(mxnet.nd.ones((2, 3)).sum().asscalar()))\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "6.0"
