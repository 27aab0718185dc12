# flowcollector — the two commands of the README, and the benchmarks.
#   make run    install into .venv, process the bundled sample flow logs into ./var/, print a summary
#   make test   install everything the tests need (Python, Debian, npm), start services, run every test
#   make bench  benchmarks: records per CPU-second and peak memory
#   make fuzz   the long AWS and GCP parser fuzz against their oracles (tests/test_fuzz_aws.py, tests/test_fuzz_gcp.py):
#               1,000,000 inputs each (FUZZ_JOBS=1)
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
FUZZ_JOBS ?= 1

# FUZZ_JOBS processes (one per core you can spare), each a share of the inputs from its own range of seeds (job k from
# seed k * 10^9); reproducers of any crash or disagreement go to var/fuzz/, named by seed.
fuzz: install
	@pids=; for k in $$(seq 0 $$(( $(FUZZ_JOBS) - 1 ))); do \
		FLOWCOLLECTOR_FUZZ=long FLOWCOLLECTOR_FUZZ_INPUTS=$$(( $(FUZZ_INPUTS) / $(FUZZ_JOBS) )) \
		FLOWCOLLECTOR_FUZZ_SEED=$$(( k * 1000000000 )) FLOWCOLLECTOR_FUZZ_DIR=var/fuzz \
		$(BIN)/python -m pytest -q -s -p no:cacheprovider tests/test_fuzz_aws.py tests/test_fuzz_gcp.py -k long_fuzz \
		& pids="$$pids $$!"; \
	done; rc=0; for p in $$pids; do wait $$p || rc=1; done; exit $$rc

clean:
	rm -rf var .pytest_cache
