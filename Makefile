# flowcollector — the two commands of the README, and the benchmarks.
#   make run    install into .venv, process the bundled sample flow logs into ./var/, print a summary
#   make test   install everything the tests need (Python, Debian, npm), start services, run every test
#   make bench  benchmarks: records per CPU-second and peak memory
#   make fuzz   the long AWS parser fuzz against the oracle (tests/test_fuzz_aws.py): 1,000,000 inputs on 2 cores
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench fuzz clean

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

FUZZ_INPUTS ?= 1000000

# Two processes (one per core), each half the inputs; reproducers of any crash or disagreement go to var/fuzz/.
fuzz: install
	FLOWCOLLECTOR_FUZZ=long FLOWCOLLECTOR_FUZZ_INPUTS=$$(( $(FUZZ_INPUTS) / 2 )) FLOWCOLLECTOR_FUZZ_DIR=var/fuzz \
		$(BIN)/python -m pytest -q -s -p no:cacheprovider tests/test_fuzz_aws.py -k long_fuzz & p1=$$!; \
	FLOWCOLLECTOR_FUZZ=long FLOWCOLLECTOR_FUZZ_INPUTS=$$(( $(FUZZ_INPUTS) / 2 )) FLOWCOLLECTOR_FUZZ_DIR=var/fuzz \
		$(BIN)/python -m pytest -q -s -p no:cacheprovider tests/test_fuzz_aws.py -k long_fuzz & p2=$$!; \
	wait $$p1; r1=$$?; wait $$p2; r2=$$?; test $$r1 -eq 0 -a $$r2 -eq 0

clean:
	rm -rf var .pytest_cache
