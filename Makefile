# Two set-up commands for a fresh machine: `make demo` and `make test` (both install what is missing first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml requirements.txt scripts/install_system.sh
	bash scripts/install_system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# pip (not uv/poetry): only pip finds the local torch 2.14.1 / torchvision 0.29.1 wheels
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/timbreclip demo --out demo-output

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_biquads.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
