# The two commands: `make demo` (main job end to end) and `make test` (the whole suite).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench-ingest bench-forecast bench-forecast-gpu gpu-env clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	URLLIB3_NO_OVERRIDE=1 $(BIN)/python -m pip install --quiet --no-binary urllib3-future -e '.[dev,train,cpu]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m jobs.demo

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check pipelines schemas jobs serve tests bench
	$(BIN)/ruff format --check pipelines schemas jobs serve tests bench

typecheck: $(STAMP)
	$(BIN)/mypy pipelines schemas jobs serve

bench-ingest: $(STAMP)
	$(BIN)/python -m bench.ingest

bench-forecast: $(STAMP)
	$(BIN)/python -m bench.forecast_inference
	$(BIN)/python -m bench.forecast_sql
	$(BIN)/python -m bench.forecast_memory

bench-forecast-gpu: $(STAMP)
	$(BIN)/python -m bench.forecast_gpu

# Swap the CPU ONNX Runtime for onnxruntime-gpu (CUDA execution provider) in this venv.
gpu-env: $(STAMP)
	$(BIN)/python -m pip uninstall --quiet --yes onnxruntime
	URLLIB3_NO_OVERRIDE=1 $(BIN)/python -m pip install --quiet --no-binary urllib3-future -e '.[dev,train,gpu]'

clean:
	rm -rf output
