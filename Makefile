# The two commands of the README:  `make demo`  and  `make test`.
#
# Python: an active virtual env (VIRTUAL_ENV set) is used as it is; otherwise the project env .venv is created
# and used (scripts/venv.sh): a stock Debian 12 / Ubuntu 24.04 python3 is "externally managed" (PEP 668) and
# refuses pip installs. `make PYTHON=/path/to/python ...` overrides both.
ifdef VIRTUAL_ENV
PYTHON ?= python3
VENV =
else
PYTHON ?= .venv/bin/python
VENV = venv
endif
PIP = $(PYTHON) -m pip

.PHONY: deps venv install demo test test-deps test-all bench sanitize

venv:
	./scripts/venv.sh

deps:
	./scripts/system_deps.sh

# scipy-openblas32 (the BLAS, see setup.py) must be present before a --no-build-isolation build
install: deps $(VENV)
	$(PIP) install -q numpy setuptools wheel scipy-openblas32
	$(PIP) install -q --no-build-isolation -e .

demo: install
	$(PYTHON) -m gozaru demo

# torch==2.13.0 is pinned so pip takes the CPU wheel (never the multi-GB CUDA build).
test-deps: install
	$(PIP) install -q -e ".[test,ray,tracking]" --no-build-isolation
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
