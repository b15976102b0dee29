# The two commands of the README:  `make demo`  and  `make test`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: deps install demo test test-deps test-all bench sanitize

deps:
	./scripts/system_deps.sh

install: deps
	$(PIP) install -q numpy setuptools wheel
	$(PIP) install -q --no-build-isolation -e .

demo: install
	$(PYTHON) -m gozaru demo

# torch==2.13.0 is pinned so pip takes the CPU wheel (never the multi-GB CUDA build).
test-deps: install
	$(PIP) install -q -e ".[test,ray]" --no-build-isolation
	PYTHON=$(PYTHON) ./scripts/cublas_headers.sh

# The default suite, then the C-core and checkpoint tests under ASan + UBSan and the leak check.
test: test-deps
	PYTHON=$(PYTHON) ./scripts/run_tests.sh
	PYTHON=$(PYTHON) ./scripts/sanitize.sh

test-all: test-deps
	PYTHON=$(PYTHON) ./scripts/run_tests.sh -m "slow or not slow"

bench: install
	$(PYTHON) benchmarks/bench_cpu.py
	$(PYTHON) benchmarks/bench_generate.py
