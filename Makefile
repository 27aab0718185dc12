# flowcollector — the two commands of the README, and the benchmarks.
#   make run    install into .venv, process the bundled sample flow logs into ./var/, print a summary
#   make test   install everything the tests need (Python, Debian, npm), start services, run every test
#   make bench  benchmarks: records per CPU-second and peak memory
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench clean

install:
	@scripts/install.sh

run: install
	$(BIN)/flowcollector run -c config.example.yaml --once

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf var .pytest_cache
