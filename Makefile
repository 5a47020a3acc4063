# changegate — the two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Install only the locked, hash-checked files: a local wheel folder must not stand in for them.
unexport PIP_FIND_LINKS

.PHONY: help venv lock image controlplane node helm lint test test-unit test-integration demo cluster bench sync-crds clean

help:
	@echo "make test          set everything up (venv, control plane, node, helm, image) and run lint + all tests"
	@echo "make demo          run changegate end to end on a local control plane"
	@echo "make lint          ruff, ruff format --check, mypy --strict, import-linter, vulture"
	@echo "make image         build the container image (podman) as the chart's default image"
	@echo "make lock          refresh uv.lock and requirements/*.txt (UPGRADE=1: newest allowed pins)"
	@echo "make controlplane  build (or reuse) etcd, kube-apiserver, kubectl from Go modules"
	@echo "make node          build (or reuse) kubelet, controllers, scheduler; install containerd (root)"
	@echo "make cluster       start a local control plane and print how to use it (NODE=1: with a node"
	@echo "                   running pods, and the image from make image imported; root)"
	@echo "make bench         run the benchmarks (they print figures)"

# The virtualenv installs exactly the lock (requirements/dev.txt: runtime, test and dev
# dependencies, pip and the build backend, every file checked against its hash), then
# changegate itself, editable, built by the pinned backend. Re-run when either changes.
$(VENV)/.stamp: pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.stamp

# Re-resolve after editing dependencies in pyproject.toml; commit uv.lock and requirements/.
lock: venv
	bash hack/lock.sh $(if $(UPGRADE),--upgrade)

# ghcr.io/changegate/changegate:<version> (the chart's default image), built with podman.
image:
	nice bash hack/build-image.sh

controlplane: venv
	$(PY) -m controller.devcluster build

# The node mode: kubelet, kube-controller-manager, kube-scheduler (Go modules, cached like the
# control plane) and containerd, runc, CNI plugins (Debian packages; installs as root).
node: controlplane
	$(PY) -m controller.devcluster build --node

helm:
	@bash hack/build-helm.sh >/dev/null

lint: venv
	bash hack/lock.sh --check
	$(VENV)/bin/ruff check controller demo tests bench
	$(VENV)/bin/ruff format --check controller demo tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/vulture

sync-crds:
	mkdir -p charts/changegate/crds
	cp crds/*.yaml charts/changegate/crds/

test: venv controlplane node helm image lint
	$(PY) -m pytest -q tests

test-unit: venv
	$(PY) -m pytest -q tests/unit

test-integration: venv controlplane node helm image
	$(PY) -m pytest -q tests/integration

cluster: controlplane $(if $(NODE),node image)
	$(PY) -m controller.devcluster up $(if $(NODE),--node --image "$$(bash hack/build-image.sh)")

demo: venv controlplane
	$(PY) -m demo

bench: venv
	$(PY) bench/decide.py
	$(PY) bench/admission.py
	$(PY) bench/apiserver.py
	$(PY) bench/operator.py
	$(PY) bench/report.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .changegate-cluster
