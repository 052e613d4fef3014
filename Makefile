# The two commands of the README: `make demo` and `make test`. Everything they need is
# installed by the targets below, on a fresh Debian/Ubuntu machine with Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup system-packages lint typecheck bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "farmhand needs $(PYTHON) (the bpy wheel is built for Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[blender,dev,postgres]'
	touch $(STAMP)

setup: $(STAMP)

system-packages:
	./scripts/install-system-packages.sh

demo: setup
	$(BIN)/farmhand demo

test: setup system-packages
	$(BIN)/pytest -n 2 --dist loadgroup -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: setup
	$(BIN)/mypy

bench: setup system-packages
	$(BIN)/python benchmarks/farm_vs_single.py

clean:
	rm -rf $(VENV) farmhand-demo .pytest_cache .mypy_cache .ruff_cache
