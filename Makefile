# changegate — the two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help venv controlplane helm lint test test-unit test-integration demo cluster bench sync-crds clean

help:
	@echo "make test          set everything up (venv, control plane, helm) and run lint + all tests"
	@echo "make demo          run changegate end to end on a local control plane"
	@echo "make lint          ruff, ruff format --check, mypy --strict, import-linter"
	@echo "make controlplane  build (or reuse) etcd, kube-apiserver, kubectl from Go modules"
	@echo "make cluster       start a local control plane and print how to use it"
	@echo "make bench         run the benchmarks (they print figures)"

# The virtualenv is rebuilt when pyproject.toml changes.
$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	touch $@

venv: $(VENV)/.stamp

controlplane: venv
	$(PY) -m controller.devcluster build

helm:
	@bash hack/build-helm.sh >/dev/null

lint: venv
	$(VENV)/bin/ruff check controller tests bench
	$(VENV)/bin/ruff format --check controller tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

sync-crds:
	mkdir -p charts/changegate/crds
	cp crds/*.yaml charts/changegate/crds/

test: venv controlplane helm lint
	$(PY) -m pytest -q tests

test-unit: venv
	$(PY) -m pytest -q tests/unit

test-integration: venv controlplane helm
	$(PY) -m pytest -q tests/integration

cluster: controlplane
	$(PY) -m controller.devcluster up

demo: venv controlplane
	$(PY) -m controller.demo

bench: venv
	$(PY) bench/decide.py
	$(PY) bench/admission.py
	$(PY) bench/apiserver.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .changegate-cluster
