# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= test,minilm,lens

.PHONY: demo test

# torch 2.13.0 is installed first: its CPU build is what this project pins to (a plain `torch`
# would pull a multi-GB CUDA build).
$(BIN)/theorycraft: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	touch $@

demo: $(BIN)/theorycraft
	$(BIN)/theorycraft validate examples/*.yaml
	$(BIN)/theorycraft infer examples/modadd_fourier.yaml --out runs/modadd-fourier

# two workers (pytest-xdist), a test file each at a time, handed out in collection order: the
# slowest files first (tests/conftest.py, SLOWEST_FIRST), side by side, the rest around them
test: $(BIN)/theorycraft
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder
