# Everything a fresh machine with Python 3.11+ and make needs: `make demo`, `make test`.
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test promtool test-database lint typecheck check install clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	touch $@

install: $(VENV)/.synced

demo: install
	$(VENV)/bin/dsar demo

# promtool (alert rule tests) from Debian's prometheus package, unpacked, never installed.
# Where apt cannot fetch it, say so and go on: the alert tests then fail with the reason
# (DSAR_ALLOW_NO_PROMTOOL=1 turns them into skips on such machines).
promtool:
	@bash .ci/install-promtool || echo "make: could not fetch promtool; tests/test_alerts.py will fail (see README)" >&2

# PostgreSQL on 127.0.0.1:5432 started where it is installed but down, and the test database
# created (.ci/test-database says what it did, or why it could not).
test-database:
	@bash .ci/test-database

# Two workers (pytest-xdist): the suite's ticks, emulators and daemons wait on I/O as much as
# they compute. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2

test: install promtool test-database
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check service tests migrations
	$(VENV)/bin/ruff format --check service tests migrations

typecheck: install
	$(VENV)/bin/mypy

check: lint typecheck test

clean:
	rm -rf $(TOOLS) $(VENV) .pytest_cache .mypy_cache .ruff_cache
