"""Pick the Python interpreter, virtual environment and constraint set for ``make``.

Run by the Makefile before it creates anything (docs/install.md)::

    python scripts/check_python.py --python CMD [--auto] [--venv DIR] [--venv-given]

``CMD`` is the interpreter asked for (``make ... PYTHON=CMD``, default ``python3``).
It is started once to read its version.  A pyenv shim that pyenv has not
activated (``pyenv: python3.12: command not found``) is replaced by the
interpreter of the pyenv version that provides it.  With ``--auto`` (the user
did not set ``PYTHON``) an unsupported ``CMD`` is replaced by the first
supported ``python3.X`` on ``PATH``, newest first.

The virtual environment is ``DIR`` (default ``.venv``) unless ``DIR`` was built
by another Python minor version: then ``DIR-pyX.Y`` (so ``make test
PYTHON=python3.12`` never reuses the 3.11 environment), or, when the user set
``VENV`` (``--venv-given``), an error.

Output, one line on stdout, for the Makefile:
``OK <interpreter> <venv> <constraints file>`` or ``ERROR <one-line message>``.
Notes on what was substituted go to stderr.

This file must run on any interpreter a user may have as ``python3``, so it is
written for Python 2.7 and 3.x alike (no f-strings, no annotations).
"""

from __future__ import print_function

import os
import subprocess
import sys

#: supported (major, minor) -> the constraint file verified on it
CONSTRAINTS = {
    (3, 11): "constraints.txt",
    (3, 12): "constraints-py3.12.txt",
}
SUPPORTED = sorted(CONSTRAINTS)
HOW_TO_GET = ("get one with `uv python install 3.12`, `pyenv install 3.12` or your "
              "distribution's python3.12 package, then run `make demo PYTHON=python3.12` "
              "(likewise make test; python3.11 works too)")
PROBE = "\n".join([
    "import sys",
    "print('%d.%d.%d' % tuple(sys.version_info[:3]))",
    "print(sys.executable)",
    "try:",
    "    import ensurepip, venv",
    "    print('venv')",
    "except ImportError:",
    "    print('no-venv')",
])


def describe(command, executable):
    """``python3.13`` or ``python3 = /usr/bin/python3.13``: what was asked for and what ran."""
    return command if command == executable else "%s = %s" % (command, executable)


def version_text(version):
    return ".".join(str(part) for part in version)


def supported_text():
    return "Python " + " or ".join(version_text(v) for v in SUPPORTED)


def probe(command, env=None):
    """``((major, minor, micro), executable, has_venv)`` of interpreter ``command``, or
    ``None`` when it cannot be started or does not answer.  ``has_venv``: the ``venv``
    and ``ensurepip`` modules are there (Debian/Ubuntu ship them separately)."""
    try:
        proc = subprocess.Popen([command, "-c", PROBE], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        out, _ = proc.communicate()
    except OSError:
        return None
    if proc.returncode != 0:
        return None
    lines = out.decode("utf-8", "replace").split("\n")
    try:
        version = tuple(int(p) for p in lines[0].strip().split("."))
    except ValueError:
        return None
    return version, lines[1].strip() or command, lines[2:3] == ["venv"]


def pyenv_candidates(command):
    """Interpreters pyenv has for ``command`` (a bare name such as ``python3.12``), newest
    version first, as absolute paths; none when pyenv is absent."""
    if os.sep in command:
        return []
    try:
        root = subprocess.Popen(["pyenv", "root"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE).communicate()[0]
        whence = subprocess.Popen(["pyenv", "whence", command], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE).communicate()[0]
    except OSError:
        return []
    root = root.decode("utf-8", "replace").strip()
    names = [v.strip() for v in whence.decode("utf-8", "replace").split("\n") if v.strip()]
    paths = [os.path.join(root, "versions", name, "bin", command) for name in reversed(names)]
    return [path for path in paths if os.path.isfile(path)]


def resolve(command):
    """``(version, executable, has_venv, note)`` for ``command``; ``None`` when nothing runs."""
    found = probe(command)
    if found:
        return found + (None,)
    for path in pyenv_candidates(command):
        found = probe(path)
        if found:
            note = ("%s is a pyenv shim not active here; using %s (Python %s)"
                    % (command, path, version_text(found[0])))
            return found + (note,)
    return None


def venv_version(venv):
    """``(major, minor)`` of the Python that built virtual environment ``venv``, or ``None``."""
    try:
        with open(os.path.join(venv, "pyvenv.cfg")) as handle:
            lines = handle.read().split("\n")
    except (IOError, OSError):
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            try:
                return tuple(int(p) for p in value.strip().split(".")[:2])
            except ValueError:
                return None
    return None


def unsupported_message(command, version, executable):
    minor = tuple(version[:2])
    if minor > SUPPORTED[-1]:
        why = "MXNet 1.9.1 needs numpy < 2, which has no wheels for it"
    elif minor >= (3, 8):
        why = "the pinned dependency sets have no wheels for it"
    else:
        why = "too old for MXNet 1.9.1's dependencies"
    return ("Python %s (%s) is not supported (%s); nst-distill runs on %s: %s"
            % (version_text(version), describe(command, executable), why, supported_text(),
               HOW_TO_GET))


def choose_interpreter(command, auto):
    """``(version, executable)`` to use, or raise ``SystemExit`` with the ERROR line printed."""
    found = resolve(command)
    if found and tuple(found[0][:2]) in CONSTRAINTS:
        check_venv_module(command, found)
        if found[3]:
            note(found[3])
        return found[0], found[1]
    if auto:
        for minor in reversed(SUPPORTED):
            name = "python%d.%d" % minor
            other = resolve(name)
            if other and tuple(other[0][:2]) == minor and other[2]:
                what = ("Python %s" % version_text(found[0])) if found else "not runnable"
                note("%s is %s (unsupported); using %s (Python %s, %s) -- set PYTHON= to choose"
                     % (command, what, name, version_text(other[0]), other[1]))
                return other[0], other[1]
    if found:
        fail(unsupported_message(command, found[0], found[1]))
    fail("PYTHON=%s cannot be started (not found or not runnable); nst-distill runs on %s: %s"
         % (command, supported_text(), HOW_TO_GET))


def check_venv_module(command, found):
    if not found[2]:
        minor = version_text(found[0][:2])
        fail("Python %s (%s) has no venv/ensurepip module, which make needs to create the "
             "environment: install your distribution's python%s-venv package (Debian/Ubuntu: "
             "`apt-get install python%s-venv`), or pass another interpreter with PYTHON="
             % (version_text(found[0]), describe(command, found[1]), minor, minor))


def choose_venv(venv, venv_given, version):
    built = venv_version(venv)
    minor = tuple(version[:2])
    if built is None or built == minor:
        return venv
    if venv_given:
        fail("VENV=%s was built by Python %s, not Python %s: remove it (`make clean VENV=%s`) "
             "or name another VENV=" % (venv, version_text(built), version_text(minor), venv))
    other = "%s-py%s" % (venv.rstrip("/"), version_text(minor))
    built_other = venv_version(other)
    if built_other is not None and built_other != minor:
        fail("%s was built by Python %s, not Python %s: remove it (`rm -rf %s`)"
             % (other, version_text(built_other), version_text(minor), other))
    note("%s belongs to Python %s; using %s for Python %s"
         % (venv, version_text(built), other, version_text(version)))
    return other


def note(text):
    print("make: " + text, file=sys.stderr)


def fail(message):
    print("ERROR " + message)
    sys.exit(2)


def parse(argv):
    options = {"python": "python3", "auto": False, "venv": ".venv", "venv_given": False}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--auto":
            options["auto"] = True
        elif arg == "--venv-given":
            options["venv_given"] = True
        elif arg in ("--python", "--venv") and args:
            options[arg[2:]] = args.pop(0)
        else:
            fail("check_python.py: unknown argument %r (see the docstring)" % arg)
    return options


def main(argv=None):
    options = parse(sys.argv[1:] if argv is None else argv)
    version, executable = choose_interpreter(options["python"], options["auto"])
    venv = choose_venv(options["venv"], options["venv_given"], version)
    print("OK %s %s %s" % (executable, venv, CONSTRAINTS[tuple(version[:2])]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
