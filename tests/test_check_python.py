"""scripts/check_python.py and the Makefile's use of it: a supported interpreter gets
its constraint set and its own virtual environment; anything else stops make with one
line naming the interpreter, the supported versions and how to get and pass one."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_python.py"
MINOR = "%d.%d" % sys.version_info[:2]


def fake_python(folder, name, version, venv=True):
    """An executable ``folder/name`` that answers the script's probe like Python ``version``."""
    path = Path(folder) / name
    path.write_text("#!/bin/sh\necho %s\necho %s\necho %s\n"
                    % (version, path, "venv" if venv else "no-venv"))
    path.chmod(0o755)
    return path


def check(*args, runner=sys.executable, path=None, cwd=None):
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    proc = subprocess.run([runner, str(SCRIPT)] + [str(a) for a in args], env=env,
                          cwd=str(cwd or REPO), capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout.strip(), proc.stderr.strip()


def test_this_interpreter_is_accepted_with_its_constraint_set(tmp_path):
    code, out, err = check("--python", sys.executable, "--venv", tmp_path / "venv")
    assert code == 0, out + err
    word, executable, venv, constraints = out.split()
    assert word == "OK" and os.path.samefile(executable, sys.executable)
    assert venv == str(tmp_path / "venv")
    assert constraints == {"3.11": "constraints.txt", "3.12": "constraints-py3.12.txt"}[MINOR]
    assert (REPO / constraints).is_file()


@pytest.mark.parametrize("version, reason", [
    ("3.13.0", "numpy < 2, which has no wheels for it"),
    ("3.10.13", "the pinned dependency sets have no wheels for it"),
    ("3.7.16", "too old"),
    ("2.7.18", "too old"),
])
def test_unsupported_interpreter_gets_one_error_line(tmp_path, version, reason):
    fake = fake_python(tmp_path, "python" + version[:4].rstrip("."), version)
    code, out, err = check("--python", fake)
    assert code == 2 and err == ""
    assert out.startswith("ERROR Python %s (%s) is not supported (" % (version, fake))
    assert reason in out and "\n" not in out
    for must in ("Python 3.11 or 3.12", "uv python install 3.12", "pyenv install 3.12",
                 "make demo PYTHON=python3.12"):
        assert must in out


def test_unsupported_python3_is_replaced_by_a_supported_one_on_path(tmp_path):
    fake_python(tmp_path, "python3", "3.13.0")
    good = fake_python(tmp_path, "python3.12", "3.12.1")
    code, out, err = check("--python", "python3", "--auto", "--venv", tmp_path / "venv",
                           path=str(tmp_path))
    assert code == 0, out
    assert out.split()[:2] == ["OK", str(good)]
    assert out.split()[3] == "constraints-py3.12.txt"
    assert err == ("make: python3 is Python 3.13.0 (unsupported); using python3.12 (Python 3.12.1, "
                   "%s) -- set PYTHON= to choose" % good)


def test_no_replacement_when_python_was_named(tmp_path):
    fake_python(tmp_path, "python3.13", "3.13.0")
    fake_python(tmp_path, "python3.12", "3.12.1")
    code, out, _ = check("--python", "python3.13", path=str(tmp_path))
    assert code == 2 and out.startswith("ERROR Python 3.13.0")


def test_interpreter_that_does_not_start(tmp_path):
    code, out, _ = check("--python", tmp_path / "missing-python", path=str(tmp_path))
    assert code == 2
    assert out.startswith("ERROR PYTHON=%s cannot be started" % (tmp_path / "missing-python"))


def test_missing_venv_module_is_named_with_the_package_to_install(tmp_path):
    fake = fake_python(tmp_path, "python3.12", "3.12.3", venv=False)
    code, out, _ = check("--python", fake)
    assert code == 2 and "has no venv/ensurepip module" in out
    assert "apt-get install python3.12-venv" in out


def test_venv_of_another_version_is_never_reused(tmp_path):
    fake = fake_python(tmp_path, "python3.12", "3.12.1")
    venv = tmp_path / ".venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /x\nversion = 3.11.7\n")
    code, out, err = check("--python", fake, "--venv", venv)
    assert code == 0 and out.split()[2] == str(venv) + "-py3.12"
    assert err == "make: %s belongs to Python 3.11; using %s-py3.12 for Python 3.12.1" % (venv, venv)
    # the same version's environment is reused
    (venv / "pyvenv.cfg").write_text("home = /x\nversion_info = 3.12.1.final.0\n")
    assert check("--python", fake, "--venv", venv)[1].split()[2] == str(venv)
    # a VENV the user named that belongs to another version is an error, not a silent switch
    (venv / "pyvenv.cfg").write_text("home = /x\nversion = 3.11.7\n")
    code, out, _ = check("--python", fake, "--venv", venv, "--venv-given")
    assert code == 2 and out.startswith("ERROR VENV=%s was built by Python 3.11, not Python 3.12" % venv)


def test_runs_on_python_2_7():
    """The script must work under whatever ``python3`` a user has, down to 2.7."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which("python2.7")] + sorted(pyenv.glob("2.7*/bin/python2.7"))
    runs = [str(c) for c in candidates if c and subprocess.run(
        [str(c), "-c", "pass"], capture_output=True).returncode == 0]
    if not runs:
        pytest.skip("no Python 2.7 here")
    old = runs[0]
    code, out, _ = check("--python", sys.executable, runner=str(old))
    assert code == 0 and out.startswith("OK ")


def test_make_stops_before_creating_anything(tmp_path):
    """``make demo PYTHON=<3.13>``: exit status 2, one line from make, no pip, no venv."""
    if not shutil.which("make"):
        pytest.skip("make not installed")
    fake = fake_python(tmp_path, "python3.13", "3.13.0")
    venv = tmp_path / "venv"
    # run as a user would, not as a sub-make of ``make test`` (which would print
    # "make[1]: Entering directory ...")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    proc = subprocess.run(["make", "-n", "demo", "PYTHON=%s" % fake, "VENV=%s" % venv],
                          cwd=str(REPO), capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "*** Python 3.13.0 (%s) is not supported" % fake in lines[0]
    assert "Traceback" not in proc.stderr and not venv.exists()
