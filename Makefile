# Cadence: `make demo` and `make test` are all a newcomer needs (Python 3.11+).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck install system-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## demo: create .venv, install, run the drip demo (SQLite + filesystem broker + outbox by default)
demo: $(STAMP)
	$(BIN)/cadence demo

## system-deps: Debian packages the tests use for real (Chromium, SpamAssassin, rspamd, smtp-sink, socat and ip for the multi-host test), if missing
system-deps:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v spamassassin >/dev/null || missing="$$missing spamassassin"; \
	command -v rspamd >/dev/null || missing="$$missing rspamd"; \
	[ -x /usr/sbin/smtp-sink ] || missing="$$missing postfix"; \
	command -v socat >/dev/null || missing="$$missing socat"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	      || echo "could not install$$missing: the tests that need them will say so"; \
	  else echo "missing Debian packages:$$missing (tests that need them skip outside CI)"; fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## test: install, then ruff, mypy --strict on src/, and the whole pytest suite
test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest -q -n 3 --dist loadfile --durations=15

bench: $(STAMP)
	$(BIN)/python bench/send_throughput.py

clean:
	rm -rf .cadence preview .pytest_cache .mypy_cache .ruff_cache
