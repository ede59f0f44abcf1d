# The two commands a newcomer needs: `make demo` and `make test`.
# Every target installs what it needs on a fresh clone; a second run reuses .venv and .cache.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# Debian packages the suite needs: Java+Maven run the project's own Kafka broker; kubectl
# renders the Kustomize manifests and promtool (package prometheus) checks the alert rules.
# openssh-server runs the SFTP integration tests' sshd: an absolute path, as /usr/sbin is not on
# a normal user's PATH (`command -v` accepts a path). postgresql-15 is the real source the
# SQL-driven tests capture with Debezium (its binaries are not on any PATH either).
APT_PACKAGES := openjdk-17-jre-headless maven kubectl prometheus openssh-server postgresql-15
APT_COMMANDS := java mvn kubectl promtool /usr/sbin/sshd ssh-keygen /usr/lib/postgresql/15/bin/initdb

.PHONY: demo replay-example test lint typecheck unit integration system-deps venv kafka-jars debezium-jars clean lock bench-deps

test: system-deps venv kafka-jars debezium-jars lint typecheck
	$(VPY) -m pytest

unit: venv
	$(VPY) -m pytest -m "not integration"

integration: system-deps venv kafka-jars debezium-jars
	$(VPY) -m pytest -m integration

lint: venv
	$(VENV)/bin/ruff check connector tests bench examples
	$(VENV)/bin/ruff format --check connector tests bench examples
	$(VENV)/bin/lint-imports --cache-dir .cache/import-linter .importlinter
	@if command -v cargo >/dev/null; then \
	  cd fastpath && cargo fmt --check && cargo clippy --quiet --release -- -D warnings; \
	else $(REQUIRE_CARGO); echo "lint: rustfmt and clippy not run (no cargo)"; fi

typecheck: venv
	$(VENV)/bin/mypy

# Installs only what is missing, so a developer machine is left alone; CI (root, fresh) gets everything.
system-deps:
	@missing=""; for c in $(APT_COMMANDS); do command -v $$c >/dev/null || missing=yes; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(APT_PACKAGES); \
	fi

# cargo builds the compiled fast path; rustup installs it under ~/.cargo/bin, which a
# non-login shell (CI) may not have on its PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)

$(VPY):
	$(PY) -m venv $(VENV)

# Every third-party package comes from the lock, hash-checked and as a wheel (docs/decisions/0017):
# runtime + dev + test + the build tools, pip itself among them. The connector is then installed
# editable on its own, built by the lock's hatchling (no build isolation: nothing unlocked is fetched).
PIP_LOCKED = $(VPY) -m pip install -q --require-hashes --only-binary :all:
$(VENV)/.installed: pyproject.toml requirements/dev.lock | $(VPY)
	$(PIP_LOCKED) -r requirements/dev.lock
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# The lock files, compiled by uv (a dev dependency) from pyproject.toml and requirements/build.in.
# `make lock` keeps every pin it can and adds what a changed pyproject.toml needs;
# `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed versions, and
# `make lock LOCK_ARGS="--upgrade-package httpx"` one package. dev.lock is compiled first and
# holds runtime.lock and build.lock to its versions, so the image runs what the tests ran;
# bench.lock is dev.lock plus faust-streaming (which holds click below 8.4).
LOCK_COMPILE = $(VENV)/bin/uv pip compile -q --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make lock' $(LOCK_ARGS)
lock: $(VENV)/.installed
	$(LOCK_COMPILE) pyproject.toml --extra dev requirements/build.in -o requirements/dev.lock
	$(LOCK_COMPILE) pyproject.toml -c requirements/dev.lock -o requirements/runtime.lock
	$(LOCK_COMPILE) requirements/build.in -c requirements/dev.lock -o requirements/build.lock
	$(LOCK_COMPILE) pyproject.toml --extra dev --extra bench requirements/build.in -o requirements/bench.lock

# The faust-streaming baseline of bench/ingest.py (pyproject's bench extra), from its lock; the
# benchmark never installs anything itself.
bench-deps: venv
	$(PIP_LOCKED) -r requirements/bench.lock

# The compiled fast path (docs/decisions/0012, 0013): Rust, built by maturin. Optional: without
# cargo the connector runs on the Python path, which is the reference the extension is held to,
# and the extension's own tests are reported as not run. CI sets CARECLOUD_REQUIRE_FASTPATH, so
# there a missing cargo is an error and the run proves what it always did.
REQUIRE_CARGO = if [ -n "$$CARECLOUD_REQUIRE_FASTPATH" ]; then \
	  echo "CARECLOUD_REQUIRE_FASTPATH is set but cargo (Rust) was not found"; exit 1; \
	fi
NO_CARGO = $(REQUIRE_CARGO); \
	echo "NOTE: cargo (Rust) not found: the compiled fast path (fastpath/) is not built and its rustfmt/clippy/tests do not run."; \
	echo "      The connector runs on the Python path: about half the ingest rate and a third of the snapshot rate"; \
	echo "      (docs/benchmarks.md). To build it: install Rust from https://rustup.rs, then run make venv again."
$(VENV)/.fastpath: $(wildcard fastpath/src/*.rs) fastpath/Cargo.toml fastpath/Cargo.lock fastpath/pyproject.toml | $(VENV)/.installed
	@if command -v cargo >/dev/null; then \
	  PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VPY) -m pip install -q --no-deps --no-build-isolation ./fastpath \
	    && touch $@; \
	else $(NO_CARGO); fi

venv: $(VENV)/.installed $(VENV)/.fastpath

# Resolves the Apache Kafka broker jars from Maven Central into .cache/kafka (once).
kafka-jars: venv
	$(VPY) -m connector.devtools.kafka fetch

# Resolves Debezium's PostgreSQL connector and the Kafka Connect runtime into .cache/debezium (once).
debezium-jars: venv
	$(VPY) -m connector.devtools.debezium fetch

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache fastpath/target

# The whole job on one machine: Kafka, S3 server, Portal simulator, synthetic stream, ingest,
# today's snapshot, checked against the generator's expected state (DEMO_ARGS="--scale 200 --keep").
demo: system-deps venv kafka-jars
	$(VPY) -m connector.devtools.demo $(DEMO_ARGS)

# The connector's ingest job, offline: the example Debezium events through decode -> map -> merge.
replay-example: venv
	$(VENV)/bin/carecloud-connector replay --mapping examples/mapping.yaml --input examples/events.jsonl
