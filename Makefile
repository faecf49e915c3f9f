# make demo / make test work on a fresh machine with Python 3 and pip: they build .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): setup.py requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[demo]' -r requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sqsmaster demo

test: $(STAMP)
	sh tests/browser_setup.sh
	$(BIN)/python -m pytest -n 3 --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check sqsmaster tests bench
	$(BIN)/mypy sqsmaster

bench: $(STAMP)
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/supervisor_bench.py
	$(BIN)/python bench/local_queues_bench.py
	$(BIN)/python bench/map_bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
