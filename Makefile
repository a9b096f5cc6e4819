# sendstream: `make run` starts everything locally; `make test` runs the whole suite against a real
# Kafka-protocol broker, PostgreSQL and SMTP peers. Both set themselves up on a fresh machine.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

# The operator key `make run` ensures exists (README walk-through). Override for anything but local use.
SENDSTREAM_BOOTSTRAP_API_KEY ?= sk_live_localdev
export SENDSTREAM_BOOTSTRAP_API_KEY

.PHONY: install run test unit lint docs bench bench-webhooks clean

UV     := $(VENV)/bin/uv

# What `make run` needs and nothing more: the services, the embedded infrastructure and the Python client
# (the `sendstream send ...` commands use it), installed by uv (from PyPI, as pip would, many times faster).
$(VENV)/.run-installed: pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv
	$(UV) pip install --quiet --python $(PY) -e '.[local]' -e clients/python
	touch $@

# Everything else the tests, lint and benchmarks use, and sendstream's own clients (clients/).
$(VENV)/.installed: $(VENV)/.run-installed clients/python/pyproject.toml clients/mcp/pyproject.toml
	$(UV) pip install --quiet --python $(PY) -e '.[dev]' -e clients/mcp
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.run-installed
	$(PY) -m devstack.local

test: install
	$(PY) -m tests.dovecot  # the IMAP server of the mail sync tests: installed where it can be
	$(PY) -m tests.postfix  # the MTA of the delivery report test: installed where it can be, never started as the system's
	$(PY) -m tests.chromium  # the browser of the dashboard's tests (Debian's, driven by Playwright): installed where it can be
	$(PY) -m pytest --durations=15

unit: install
	$(PY) -m pytest tests/unit

lint: install
	$(PY) -m ruff check .

docs: install  # regenerate the README's configuration table and deploy/env.example from the settings
	$(PY) -m services.common.settings

bench: install  # issue 24's black-box figures against a fresh `make run` stack; sustained sends and HTTP latency, with the raw Kafka and SMTP limits measured in the same run; then search; replay; feed latency; scheduler fire precision; IMAP intake
	$(PY) -m bench.blackbox
	$(PY) -m bench.send_pipeline
	$(PY) -m bench.search
	$(PY) -m bench.replay
	$(PY) -m bench.feed
	$(PY) -m bench.scheduler
	$(PY) -m tests.dovecot
	$(PY) -m bench.mailsync

bench-webhooks: install  # webhook deliveries to a local receiver, against the raw signed-POST rate
	$(PY) -m bench.webhooks

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache *.egg-info
