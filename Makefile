# `make run` and `make test` work on a fresh machine: they build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
STATE_DIR ?= ./.hive

.PHONY: run test bench lint install clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/hive --state-dir $(STATE_DIR) serve

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/recv_latency.py
	$(PY) bench/throughput.py
	$(PY) bench/dashboard.py
	$(PY) bench/gateway.py
	$(PY) bench/turn_start.py
	$(PY) bench/usage_cost.py
	$(PY) bench/agent_listen.py
	$(PY) bench/faults.py --wire-lines 200000 --http-requests 20000 --churn 20000

lint: $(STAMP)
	$(VENV)/bin/ruff check hyperhive tests bench
	$(VENV)/bin/mypy --strict hyperhive

clean:
	rm -rf $(VENV) build *.egg-info
