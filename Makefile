# Everything a fresh machine needs comes from here: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# pip must never resolve torch by itself (it would pull CUDA wheels): install the pinned CPU build
# first and keep it pinned with a constraint for everything after.
TORCH ?= torch==2.13.0

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(PIP) install -q -c $(VENV)/constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: install
	@echo "make demo: the pipeline (dvc repro on the demo data) is coming in the pipeline issue."
	$(VENV)/bin/movinet --help > /dev/null

bench: install
	$(PY) benchmarks/model_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
