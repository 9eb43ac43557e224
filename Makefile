# nasd developer tasks. `make test` is what CI runs (via .ci/run): it builds the venv, installs
# Mosquitto if missing, then lints, type-checks and runs the whole test suite (slow tests too).
#
#   make venv       create $(VENV) and install nasd with the agent and dev extras
#   make venv-run   create $(VENV) and install only what running needs (nasd and its agent extra)
#   make mosquitto  install Mosquitto from apt if it is missing (the tests start their own)
#   make run        a first try: embedded broker, daemon and local agents (ARGS=... passes flags);
#                   installs only what running needs (no pytest, mypy, ruff, optuna, hypothesis)
#   make test       lint + mypy + the whole pytest suite (PYTEST_ARGS=... passes flags)
#   make lint       ruff check, ruff format --check, mypy
#   make fmt        ruff format + ruff check --fix
#   make bench      the throughput benchmark
#   make clean      caches and build leftovers; `make distclean` also removes the venv

PY ?= python3
VENV ?= .venv
# The test environment pins the CPU wheel of torch (pip finds it on this machine's disk; on a
# bare PyPI it would pull a CUDA build). A GPU user installs their own torch before `make run`,
# or sets TORCH= (empty) to keep whatever torch the venv already has.
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
ARGS ?=
PYTEST_ARGS ?=

PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
# Two stamps: what running needs, and the dev extras on top. `make run` after `make test`
# installs nothing; `make test` after `make run` adds only the dev extras.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
SOURCES := nasd agents tests benchmarks

.PHONY: venv venv-run install mosquitto run test lint fmt bench clean distclean

venv: $(DEV_STAMP)

venv-run: $(RUN_STAMP)

install: venv

$(PYTHON):
	$(PY) -m venv $(VENV)

# Re-install only when the project's metadata changes; the stamps keep repeated runs fast.
$(RUN_STAMP): pyproject.toml | $(PYTHON)
	$(if $(strip $(TORCH)),$(PIP) install $(TORCH_PIP_ARGS) '$(TORCH)')
	$(PIP) install -e '.[agent]'
	touch $@

$(DEV_STAMP): $(RUN_STAMP)
	$(PIP) install -e '.[agent,dev]'
	touch $@

# Tests start their own Mosquitto on a free port: only the binary is needed, never the
# package's system service (which apt may start on port 1883; nothing here uses it).
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then \
		echo "mosquitto: $$(command -v mosquitto || echo /usr/sbin/mosquitto)"; \
	else \
		if [ "$$(id -u)" = 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
		else echo "mosquitto is missing; install it as root: apt-get install mosquitto" >&2; exit 1; fi; \
		command -v apt-get >/dev/null 2>&1 || { echo "no apt-get: install mosquitto with your package manager" >&2; exit 1; }; \
		echo "installing mosquitto with apt-get"; \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			mosquitto mosquitto-clients; \
	fi

run: venv-run
	$(VENV)/bin/nasd run examples/mnist1d.toml $(ARGS)

test: venv mosquitto
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)
	$(VENV)/bin/mypy

fmt: venv
	$(VENV)/bin/ruff format $(SOURCES)
	$(VENV)/bin/ruff check --fix $(SOURCES)

bench: venv
	$(PYTHON) benchmarks/throughput.py $(ARGS)

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -prune \
		-exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
