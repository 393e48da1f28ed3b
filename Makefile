# Two commands for a fresh machine (README): `make demo` and `make test`.
# Each creates the virtual environment on first use, for the interpreter that
# scripts/check_python.py accepts (docs/install.md): Python 3.11 installs the
# pinned set constraints.txt, Python 3.12 constraints-py3.12.txt.  Any other
# interpreter stops make here, before anything is created, with one line that
# says which interpreter was found and how to get and pass a supported one
# (`make demo PYTHON=python3.12`).  Without PYTHON=, an unsupported python3 is
# replaced by a supported python3.12 / python3.11 on PATH (make says so).
# The environment is .venv, or .venv-pyX.Y when .venv was built by another
# Python version, so environments of different interpreters are never mixed.
PYTHON ?= python3
VENV ?= .venv

.DEFAULT_GOAL := install
.PHONY: demo test install clean

ifneq ($(filter-out clean,$(or $(MAKECMDGOALS),$(.DEFAULT_GOAL))),)
# The check runs under PYTHON, or under the first python that starts if PYTHON does not.
CHECK_RUNNER := $(firstword $(foreach p,$(PYTHON) python3 python,$(if $(filter 1,$(shell $(p) -c "print(1)" 2>/dev/null)),$(p))))
ifeq ($(CHECK_RUNNER),)
$(error no Python starts here (tried PYTHON=$(PYTHON), python3, python); nst-distill needs Python 3.11 or 3.12: get one with `uv python install 3.12`, `pyenv install 3.12` or your distribution's python3.12 package, then run `make demo PYTHON=python3.12`)
endif
CHECK := $(shell $(CHECK_RUNNER) scripts/check_python.py --python '$(PYTHON)' --venv '$(VENV)' \
	$(if $(filter default file,$(origin PYTHON)),--auto) \
	$(if $(filter default file,$(origin VENV)),,--venv-given))
ifeq ($(firstword $(CHECK)),ERROR)
$(error $(wordlist 2,$(words $(CHECK)),$(CHECK)))
else ifneq ($(firstword $(CHECK)),OK)
$(error scripts/check_python.py under $(CHECK_RUNNER) gave no answer ($(CHECK)); run `$(CHECK_RUNNER) scripts/check_python.py --python $(PYTHON)` to see why)
endif
INTERPRETER := $(word 2,$(CHECK))
ENV_DIR := $(word 3,$(CHECK))
CONSTRAINTS := $(word 4,$(CHECK))
endif

PY := $(ENV_DIR)/bin/python
STAMP := $(ENV_DIR)/.installed

$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	$(INTERPRETER) -m venv $(ENV_DIR)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(ENV_DIR)/bin/nst demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) $(wildcard $(VENV)-py3.*) build *.egg-info
