# ERIOP: the two commands are `make run` and `make test`; the rest are steps of those.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export CARGO_TERM_COLOR ?= auto

.PHONY: help run test test-faults test-contract services migrate migrate-down migrate-status bootstrap-admin rebuild simulate bench schemas coverage fuzz lint fmt audit ci

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

run: services migrate ## Start what is missing, migrate, run gateway + bridge + projections until Ctrl-C
	@bash scripts/run.sh

test: ## Run every test against the real services (starts what is down)
	@bash scripts/test.sh

test-faults: ## Kill each component (then two at once) under load: nothing lost or doubled (ARGS="--help")
	@bash scripts/test-faults.sh $(ARGS)

test-contract: ## schemathesis against the served OpenAPI document, every phase, five roles: no failure
	@bash scripts/test-contract.sh $(ARGS)

coverage: ## make test, instrumented: line coverage of the workspace at the end (held at ERIOP_COVERAGE_MIN, 80)
	@ERIOP_COVERAGE=1 bash scripts/test.sh

services: ## Start PostgreSQL, Redis, Mosquitto and the current nats-server if they are down
	@bash scripts/services.sh

migrate: ## Apply every pending migration (creates the database if needed)
	@cargo run --quiet -p eriop-migrations --bin eriop-migrate -- up

migrate-down: ## Revert all migrations, or down to TARGET=N (keeps 1..N)
	@cargo run --quiet -p eriop-migrations --bin eriop-migrate -- down --target $(or $(TARGET),0)

migrate-status: ## Show which migrations are applied
	@cargo run --quiet -p eriop-migrations --bin eriop-migrate -- status

bootstrap-admin: ## Create the first platform administrator: make bootstrap-admin EMAIL=... [PASSWORD_FILE=path]
	@test -n "$(EMAIL)" || { echo "usage: make bootstrap-admin EMAIL=admin@agency.example [PASSWORD_FILE=path]" >&2; exit 2; }
	@ERIOP_SECRET_KEY_FILE=$${ERIOP_SECRET_KEY_FILE:-$$(bash scripts/dev-secret-key.sh)} \
	  cargo run --quiet -p eriop-gateway --bin eriop-gateway -- bootstrap-admin --email "$(EMAIL)" $(if $(PASSWORD_FILE),--password-file "$(PASSWORD_FILE)")

rebuild: ## Replay the event store into the read models while the platform runs (one: make rebuild ARGS=users)
	@cargo run --quiet -p eriop-projections --bin eriop-projections -- rebuild $(ARGS)

simulate: ## Virtual street lights on the dev broker: make simulate DEVICES=100 RATE=50 [TOKEN=access-token registers them]
	@bash scripts/simulate.sh

bench: ## Measure ingest, API, commands, replay and memory as deployed (release); writes docs/BENCHMARKS.md (ARGS="--help")
	@bash scripts/bench.sh $(ARGS)

fuzz: ## Fuzz the decoders of outside bytes (cargo-fuzz), each for FUZZ_SECONDS (60)
	@bash scripts/fuzz.sh

schemas: ## Write docs/schemas/ anew from the NATS message types (a test fails while they differ)
	@ERIOP_WRITE_SCHEMAS=1 cargo test --quiet -p eriop-nats --lib schemas

fmt: ## Format the code
	@cargo fmt --all

lint: ## Formatting and clippy, as CI runs them
	@cargo fmt --all --check
	@cargo clippy --workspace --all-targets -- -D warnings

audit: ## RustSec audit against ../shared/advisory-db, offline (exceptions: .cargo/audit.toml)
	@bash scripts/audit.sh

ci: ## What CI runs (.ci/run)
	@bash .ci/run
