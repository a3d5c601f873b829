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
	$(PY) tools/demo_summary.py out

test: .setup-stamp
	$(PY) -m pytest -q

# Benchmarks that need only what is shipped; bench_features/bench_batch/eval_conversion read the open
# corpus (vc-corpus synth data/open-corpus).
bench: .setup-stamp
	$(PY) tools/bench_dsp.py
	$(PY) tools/bench_train.py
	$(PY) tools/bench_engine.py
