# Two commands on a fresh machine: `make run` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

export DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/spartan
export REDIS_URL ?= redis://127.0.0.1:6379/0

# dev.env fills in what the environment does not already say.
DEV_DEFAULTS = while IFS='=' read -r k v; do case "$$k" in [A-Z]*) ;; *) continue;; esac; [ -n "$${!k+x}" ] || export "$$k=$$v"; done < dev.env;

# `make test` runs the broker-dependent tests a second time on RabbitMQ (results stay on Redis).
AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672//
BROKER_TESTS ?= tests/workflows tests/workers tests/webapp/test_health.py tests/webapp/test_metrics.py

.PHONY: install run test test-amqp test-tools migrate lint check-services bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --editable '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

check-services: install
	@$(DEV_DEFAULTS) $(BIN)/python -m market.manage check

migrate: install
	@$(DEV_DEFAULTS) $(BIN)/python -m market.manage prepare

run: install migrate
	@mkdir -p var/media
	@echo "API        http://127.0.0.1:$${PORT:-8000}/api/v1/"
	@echo "API docs   http://127.0.0.1:$${PORT:-8000}/api/docs  (spec: /api/openapi.json)"
	@echo "Flower     http://127.0.0.1:$${FLOWER_PORT:-5555}  (basic auth from FLOWER_BASIC_AUTH, default admin:admin)"
	@echo "Sandbox    http://127.0.0.1:$${SANDBOX_PORT:-8090}  (MercadoPago stand-in)"
	@echo "Token      $(BIN)/python -m sandbox.token --uid alice [--admin]"
	@PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/honcho start -f Procfile -p $${PORT:-8000} -e dev.env$$(test -f .env && echo ,.env)

lint: install
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/lint-imports

# Debian packages some tests need, installed once when missing: docker-compose (resolves the
# compose files; no engine), Chromium and its driver (tests/browser), Prometheus and promtool
# (tests/ops; only the binaries are used, so policy-rc.d keeps the package's service stopped).
TOOLS = docker-compose:docker-compose chromium:chromium chromedriver:chromium-driver \
	prometheus:prometheus promtool:prometheus
test-tools:
	@missing=; for t in $(TOOLS); do command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	[ -z "$$missing" ] || { \
	  created=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created=1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null; rc=$$?; \
	  [ -z "$$created" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; }

test: install lint test-tools
	@$(DEV_DEFAULTS) $(BIN)/python -m market.manage check
	@$(BIN)/python -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-amqp

test-amqp: install
	@$(DEV_DEFAULTS) CELERY_BROKER_URL=$(AMQP_URL) $(BIN)/python -m market.manage check
	@TEST_BROKER_URL=$(AMQP_URL) $(BIN)/python -m pytest $(BROKER_TESTS) $(PYTEST_ARGS)

bench: install migrate
	@command -v wrk >/dev/null || apt-get install -y wrk
	@$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var
