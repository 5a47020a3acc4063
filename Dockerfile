# changegate: one process per replica — kopf operator + HTTPS admission server.
#
# Two stages. The builder installs the locked dependencies (requirements/runtime.txt, exported
# from uv.lock: wheels only, every file checked against the lock's hashes) and changegate
# itself into a venv, /opt/changegate; the runtime stage copies that venv and nothing else:
# no pip, no build tools, no compiler. It runs as an unprivileged user (uid 65532, as the
# chart expects) and works with a read-only root filesystem.
#
#   make image        # builds it here (podman), tagged as the chart's default image
#   docker build --build-arg VERSION=0.1.0 -t ghcr.io/changegate/changegate:0.1.0 .
#
# PYTHON_IMAGE is the base of both stages; production uses python:3.11-slim. The tests build
# on a Debian bookworm + python3 base made locally (hack/build-base-image.sh), because no
# image registry is reachable there. A venv makes the layout the same on either base.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY requirements/build.txt requirements/runtime.txt requirements/
# Two venvs: /opt/build holds the pinned pip and build backend, /opt/changegate (no pip of its
# own) receives only what the image runs. Dependencies come first, so editing changegate's
# code reuses this layer.
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --quiet --require-hashes --only-binary=:all: -r requirements/build.txt \
 && python3 -m venv --without-pip /opt/changegate \
 && /opt/build/bin/pip --python /opt/changegate/bin/python install --quiet \
        --require-hashes --only-binary=:all: --no-deps -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY controller ./controller
# changegate itself, built with the pinned backend (no build isolation: nothing unpinned is
# fetched), then a consistency check of the installed set.
RUN /opt/build/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
 && /opt/build/bin/pip --python /opt/changegate/bin/python install --quiet --no-deps /tmp/dist/*.whl \
 && /opt/build/bin/pip --python /opt/changegate/bin/python check

FROM ${PYTHON_IMAGE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="changegate" \
      org.opencontainers.image.description="Kubernetes admission controller for change management" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/changegate/changegate" \
      org.opencontainers.image.licenses="Apache-2.0"
# The venv's bin first: `changegate`, and `python` with changegate's packages (the chart's
# uninstall hook runs `python -c ...`).
ENV PATH=/opt/changegate/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=builder /opt/changegate /opt/changegate
RUN groupadd --gid 65532 changegate \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin changegate
# Numeric, so the kubelet can verify runAsNonRoot without resolving names.
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["changegate"]
CMD ["run"]
