# Set-up and the README's two commands. Everything is installed into ./.venv.
#   make demo   install, then run the main job on the example data shipped in examples/
#   make test   install, then lint and run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
# The torch wheel to install first. The default is the CPU build on our CI machines; on a
# GPU machine use e.g. `make demo TORCH=torch` so that pip picks a CUDA build.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
SOURCES := pyproject.toml CMakeLists.txt $(wildcard csrc/*/*.hpp csrc/*/*.cpp)

.PHONY: demo test bench clean

demo: $(VENV)/.installed
	$(BIN)/mspt balltree examples/ahmed/case_0000/surface.vtu \
	    --output out/demo/surface_patches.vtu --screenshot out/demo/surface_patches.png

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/balltree.py
	$(BIN)/python benchmarks/model.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(SOURCES) | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet --editable ".[test]"
	touch $@

clean:
	rm -rf build out .pytest_cache .ruff_cache
