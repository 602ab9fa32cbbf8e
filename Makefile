# Set-up and the README's two commands. Everything is installed into ./.venv.
#   make demo   install, then prepare -> train -> predict on the example data shipped in examples/
#   make test   install, then lint and run the test suite (what CI runs)
#   make references   clone the official Erwin and Transolver code at the commits the faithfulness tests match
PYTHON ?= python3
VENV ?= .venv
# The torch wheel to install first. The default is the CPU build on our CI machines; on a
# GPU machine use e.g. `make demo TORCH=torch` so that pip picks a CUDA build.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
SOURCES := pyproject.toml CMakeLists.txt $(wildcard csrc/*/*.hpp csrc/*/*.cpp)

# The faithfulness tests read the official files from $MSPT_REFERENCES, else from ../shared/references;
# `make references` fetches them into references/, which `make test` then uses.
REFERENCES := references
export MSPT_REFERENCES ?= $(if $(wildcard $(REFERENCES)/*),$(CURDIR)/$(REFERENCES))

.PHONY: demo test bench references clean

# prepare -> train (about 6 minutes on 2 cores) -> predict the held-out case_0005 from its STL alone,
# and once more on its CFD surface and volume, where the predictions meet the solver's fields.
demo: $(VENV)/.installed
	$(BIN)/mspt prepare "examples/ahmed/case_*" -o out/demo/data -c examples/ahmed/config.yaml --workers 2
	rm -rf out/demo/run
	$(BIN)/mspt train out/demo/data -o out/demo/run -c examples/ahmed/config.yaml
	$(BIN)/mspt predict out/demo/run examples/ahmed/case_0005/geometry.stl -o out/demo/predictions
	$(BIN)/mspt predict out/demo/run examples/ahmed/case_0005/surface.vtu \
	    --volume examples/ahmed/case_0005/volume.vtu -o out/demo/predictions

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --editable ".[test,bench]"
	$(BIN)/python benchmarks/balltree.py
	$(BIN)/python benchmarks/model.py
	$(BIN)/python benchmarks/pipeline.py

# tests/references.py names the repositories and commits; it needs git, not the environment.
references:
	$(PYTHON) tests/references.py $(REFERENCES)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(SOURCES) | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet --editable ".[test]"
	touch $@

clean:
	rm -rf build out .pytest_cache .ruff_cache
