# Two commands for a fresh machine: `make demo` (a real small experiment) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1

.PHONY: setup demo test test-slow bench-w1 clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

# FedAvg on scikit-learn's bundled digits (no download): 10 clients, Dirichlet alpha=0.5, 30 rounds.
demo: setup
	$(VENV)/bin/fedloom run --dataset digits --algorithm fedavg --model mlp --partition dirichlet --alpha 0.5 \
	    --clients 10 --rounds 30 --lr 0.05 --seed 1 --out runs/demo --overwrite

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

bench-w1: setup
	$(PY) benchmarks/w1.py --rounds 5

clean:
	rm -rf runs .pytest_cache
