# One command each: `make run`, `make test`, `make bench`. Each sets up .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8501

.PHONY: run test bench lint format clean browser postgres15 pgbouncer prometheus

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

# Debian's chromium for the end-to-end browser test (Playwright never downloads a browser here).
browser:
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium (Debian package) for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { echo "could not install chromium: run 'apt-get install -y chromium' as root"; exit 1; }; }

# Debian's PostgreSQL 15 for the tests that run on every supported version (no cluster is created or started).
postgres15:
	@test -x /usr/lib/postgresql/15/bin/postgres || { \
	  echo "installing Debian's PostgreSQL 15 for the tests on older servers"; \
	  mkdir -p /etc/postgresql-common && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null) \
	  || { echo "could not install PostgreSQL 15: run 'apt-get install -y postgresql-15' as root"; exit 1; }; }

# Debian's PgBouncer for the pooler tests (started by the tests themselves, never as a service).
pgbouncer:
	@test -x /usr/sbin/pgbouncer || { \
	  echo "installing Debian's PgBouncer for the pooler tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null) \
	  || { echo "could not install PgBouncer: run 'apt-get install -y pgbouncer' as root"; exit 1; }; }

# Debian's Prometheus (and promtool) for the metrics tests (started by the tests themselves, never as a service).
prometheus:
	@test -x /usr/bin/prometheus -a -x /usr/bin/promtool || { \
	  echo "installing Debian's Prometheus for the metrics tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
	  || { echo "could not install Prometheus: run 'apt-get install -y prometheus' as root"; exit 1; }; }

# the dashboard's port: `make run PORT=8600` (or PORT in the environment), else Streamlit's own
# STREAMLIT_SERVER_PORT, else 8501
run: $(STAMP)
	$(PY) -m dashboard --server.address 127.0.0.1 --server.port \
	  $(if $(filter file,$(origin PORT)),$(or $(STREAMLIT_SERVER_PORT),$(PORT)),$(PORT)) \
	  --server.headless true --browser.gatherUsageStats false

test: $(STAMP) browser postgres15 pgbouncer prometheus
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
