# The connector's image: slim Debian (confluent-kafka's and rocksdict's manylinux wheels need
# glibc, so not Alpine), non-root, no compiler. The base is pinned to Python 3.11 on Debian 12
# (bookworm), the versions the project is tested on; the patch release floats so a rebuild
# picks up security fixes. Base images by tag, not digest: no container registry is reachable
# from where this file is kept (only the package registries), so no digest could be read and
# checked; pin one (PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...) in your own registry
# mirror if builds must be bit-for-bit repeatable. Every Python package, the build tools
# included, comes from requirements/*.lock, hash-checked, as a wheel (docs/decisions/0017).
# Build from the repository root: docker build -t carecloud-connector .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Only for building the compiled fast path (docs/decisions/0012); nothing of it but the wheel
# reaches the runtime image. Debian 12 too, so its python3 (3.11) and glibc match the runtime.
ARG RUST_IMAGE=rust:1.95-slim-bookworm

# Stage 1: the runtime dependencies' wheels, downloaded against the lock's hashes, and the
# connector's own wheel, built by the lock's hatchling (no build isolation, so nothing unlocked
# is fetched). All dependencies ship binary wheels, so no build tools are installed here either.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/build.lock requirements/runtime.lock ./requirements/
RUN pip install --require-hashes --only-binary :all: -r requirements/build.lock \
    && pip download --require-hashes --only-binary :all: --dest /wheels -r requirements/runtime.lock
# Everything the wheel is built from (pyproject's packages and force-include; a test checks it).
# The wheel leaves connector/devtools out (pyproject's exclude): they are dev tools.
COPY pyproject.toml README.md openapi.yaml ./
COPY schemas ./schemas
COPY connector ./connector
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# Stage 1b: the compiled fast path's wheel, built for CPython 3.11 by the lock's maturin.
FROM ${RUST_IMAGE} AS fastpath
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements/build.lock ./requirements/
RUN python3 -m venv /venv \
    && /venv/bin/pip install --no-cache-dir --require-hashes --only-binary :all: -r requirements/build.lock
# maturin's build backend runs the maturin executable it finds on PATH.
ENV PATH=/venv/bin:$PATH
COPY fastpath ./fastpath
RUN /venv/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels ./fastpath

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
# The locked dependencies first, hash-checked again, then the two project wheels on their own.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/src/requirements,target=/requirements \
    --mount=type=bind,from=fastpath,source=/wheels,target=/fastpath-wheels \
    pip install --no-index --find-links=/wheels --require-hashes --only-binary :all: \
        -r /requirements/runtime.lock \
    && pip install --no-index --no-deps --find-links=/wheels --find-links=/fastpath-wheels \
        carecloud-connector carecloud-fastpath \
    && pip uninstall -y pip setuptools wheel
USER 10001:10001
WORKDIR /var/lib/carecloud
# /metrics, /healthz and /readyz (CARECLOUD_OPS_HTTP_PORT).
EXPOSE 8080
ENTRYPOINT ["carecloud-connector"]
CMD ["ingest"]
