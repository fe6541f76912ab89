# Everything a fresh machine needs comes from here: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# pip must never resolve torch by itself (it would pull CUDA wheels): install the pinned CPU build
# first and keep it pinned with a constraint for everything after.
TORCH ?= torch==2.13.0

.PHONY: install lint format test mutate demo bench clean mlflow-ui mlflow-server

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(PIP) install -q -c $(VENV)/constraints.txt -e ".[test]"
	# the stream step's C++ kernel, built for this CPU now rather than on the first stream (~15 s)
	$(PY) -c 'from movinet.models.native import main; main()'
	touch $(STAMP)

install: $(STAMP)

# Style first (ruff lint + format check, configured in pyproject.toml), then the suite.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -q $(PYTEST_ARGS)

# Mutation testing (docs/testing.md; not part of `make test`): mutmut on the modules whose numbers
# users see (pyproject.toml [tool.mutmut]), failing when a module has under 85 % of its mutants
# killed, then the named regression mutants (tests/named_mutants.py). PYTHONPATH keeps the tests'
# subprocesses on this checkout's unmutated code. One OpenMP thread: mutmut forks each mutant's run
# from a process that has run torch, and an OpenMP thread pool does not survive a fork (hangs, crashes).
mutate: install
	rm -rf mutants
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" PYTHONPATH="$(CURDIR)/src" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
		$(VENV)/bin/mutmut run --max-children 2
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) tests/mutation_report.py
	$(PY) tests/named_mutants.py

# The whole pipeline on the generated demo data, then where to look.
demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro
	@echo
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc metrics show
	@echo
	@echo "Runs, curves, confusion matrices and models: make mlflow-ui, then http://127.0.0.1:5000"
	@echo "Plots: $(VENV)/bin/dvc plots show (writes dvc_plots/index.html)"

mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlflow.db" \
		--default-artifact-root "$(CURDIR)/mlartifacts" --host 127.0.0.1 --port 5000 --workers 1

# A shared tracking server on this machine (PostgreSQL + S3 via moto + mlflow server, 127.0.0.1 only;
# thrown away on Ctrl-C): clients set MLFLOW_TRACKING_URI=http://127.0.0.1:5000. Flags: SERVER_ARGS="--port 5001".
mlflow-server: install
	$(PY) -m movinet.tracking.team_server $(SERVER_ARGS)

bench: install
	$(PY) benchmarks/model_speed.py
	$(PY) benchmarks/data_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
