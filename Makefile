# `make demo` and `make test` do all set-up on a fresh machine (see README).
VENV := .venv
PY := $(VENV)/bin/python
SETUP_INPUTS := tools/setup.sh pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.hpp)

.PHONY: setup demo test bench

.setup-stamp: $(SETUP_INPUTS)
	bash tools/setup.sh
	touch $@

setup: .setup-stamp

demo: .setup-stamp
	$(PY) -m vc.demo --out out

test: .setup-stamp
	$(PY) -m pytest -q

bench: .setup-stamp
	$(PY) tools/bench_dsp.py
