# The connector's image: slim Debian (confluent-kafka's and rocksdict's manylinux wheels need
# glibc, so not Alpine), non-root, no compiler. The base is pinned to Python 3.11 on Debian 12
# (bookworm), the versions the project is tested on; the patch release floats so a rebuild
# picks up security fixes. Pin a digest in your own registry mirror if builds must be
# bit-for-bit repeatable. Build from the repository root: docker build -t carecloud-connector .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Only for building the compiled fast path (docs/decisions/0012); nothing of it but the wheel
# reaches the runtime image. Debian 12 too, so its python3 (3.11) and glibc match the runtime.
ARG RUST_IMAGE=rust:1.95-slim-bookworm

# Stage 1: build the connector's wheel and collect every dependency as a wheel. All of them
# ship binary wheels, so no build tools are installed here either.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Everything the wheel is built from (pyproject's packages and force-include; a test checks it).
COPY pyproject.toml README.md openapi.yaml ./
COPY schemas ./schemas
COPY connector ./connector
RUN pip wheel --wheel-dir /wheels .

# Stage 1b: the compiled fast path's wheel, built by maturin for CPython 3.11.
FROM ${RUST_IMAGE} AS fastpath
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY fastpath ./fastpath
RUN python3 -m venv /venv && /venv/bin/pip wheel --no-cache-dir --wheel-dir /wheels ./fastpath

# Stage 2: the runtime. Only the installed wheels are carried over; pip leaves with them.
FROM ${PYTHON_IMAGE}
# MALLOC_ARENA_MAX: librdkafka, RocksDB and the snapshot's threads otherwise each grow a malloc
# arena; two keep the snapshot's peak RSS flat as the state grows (docs/benchmarks.md).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MALLOC_ARENA_MAX=2
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it (docs/decisions/0010).
RUN groupadd --system --gid 10001 carecloud \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/carecloud --no-create-home \
       --shell /usr/sbin/nologin carecloud \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/carecloud
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=fastpath,source=/wheels,target=/fastpath-wheels \
    pip install --no-index --find-links=/wheels --find-links=/fastpath-wheels \
        carecloud-connector carecloud-fastpath \
    && pip uninstall -y pip setuptools wheel
USER 10001:10001
WORKDIR /var/lib/carecloud
# /metrics, /healthz and /readyz (CARECLOUD_OPS_HTTP_PORT).
EXPOSE 8080
ENTRYPOINT ["carecloud-connector"]
CMD ["ingest"]
