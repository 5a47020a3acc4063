# changegate: one process per replica — kopf operator + HTTPS admission server.
#
# Two stages: the builder runs `pip install .` into a prefix (with a compiler at hand in case
# a dependency has no wheel for this platform); the runtime stage copies that prefix, has no
# build tools, and runs as an unprivileged user (uid 65532, as the chart expects).
#
#   docker build -t changegate:dev .
#
# (Images are not built in this repository's CI machine, which has no container engine.)

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
RUN pip install --prefix=/install .

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=builder /install /usr/local
RUN groupadd --gid 65532 changegate \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin changegate
# Numeric, so the kubelet can verify runAsNonRoot without resolving names.
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["changegate"]
CMD ["run"]
