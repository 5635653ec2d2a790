# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast check lint typecheck bench clean install browser postgres java test-hub-postgres

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[test,ml,spark]'
	touch $(STAMP)

install: $(STAMP) browser postgres java

# The browser tests drive Debian's Chromium (apt-get, only when it is missing); never a
# browser that Playwright would download.
browser:
	@sh tests/integration/browser/install-chromium.sh

# The hub's tests also run on PostgreSQL: Debian's server (apt-get, only when it is missing);
# the tests start their own throw-away cluster on 127.0.0.1.
postgres:
	@sh tests/install-postgresql.sh

# Nodes on Spark SQL are tested in a local Spark session: Debian's Java runtime, when missing.
java:
	@sh tests/install-java.sh

demo: $(STAMP)
	$(VENV)/bin/healthspace demo

# The whole suite, then the hub's contract suite again with every hub in PostgreSQL
# (HEALTHSPACE_HUB_TEST_DB, tests/unit/hub/hubkit.py). The console's page tests run on
# SQLite only (tests/unit/hub/test_postgres_hub.py renders the console on PostgreSQL), and
# the two files that already cover both backends are not repeated.
HUB_PG_TESTS := tests/unit/hub --ignore-glob='tests/unit/hub/test_console*.py' \
	--ignore=tests/unit/hub/test_migrations.py --ignore=tests/unit/hub/test_postgres_hub.py
test: $(STAMP) browser postgres java
	$(PY) -m pytest -n 2 --dist loadgroup -q
	$(MAKE) --no-print-directory test-hub-postgres

test-hub-postgres: $(STAMP) postgres
	HEALTHSPACE_HUB_TEST_DB=postgresql $(PY) -m pytest -n 2 -q -p no:cacheprovider $(HUB_PG_TESTS)

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy src/healthspace

check: lint typecheck test-fast

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache test-artifacts
