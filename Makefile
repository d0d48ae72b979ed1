# The two set-up commands of the README: `make demo` and `make test`. Both create or refresh .venv first, with the
# [train] and [dev] extras (the demo trains; the tests cover every job). A score/report-only install is the base
# package alone: `pip install dist/tilescope-<version>-py3-none-any.whl` (README, Set-up).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-unit bench lint wheel clean chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m jobs.demo

# The report's page is rendered by Debian's headless Chromium in tests/integration/test_report.py (as root).
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: $(STAMP) chromium
	$(PY) -m pytest -q tests

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m bench.run_all

# dist/tilescope-<version>-py3-none-any.whl, which cluster.yaml and deploy/kuberay/Dockerfile install. build/ goes
# first: setuptools would otherwise pack modules left there by an earlier build and since deleted.
wheel: $(STAMP)
	rm -rf build
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .

clean:
	rm -rf runs .pytest_cache dist
