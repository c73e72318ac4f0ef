# Two commands: `make demo` and `make test`. Each creates .venv when it is missing and reinstalls
# only when pyproject.toml changed, so a second run skips the set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PLUGIN := $(VENV)/.lammps-plugin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[data,test]"
	touch $@

$(PLUGIN): $(INSTALLED) mdplugin/engines/lammps_plugin.py $(wildcard lammps/*.cpp lammps/*.h lammps/CMakeLists.txt export/*.cpp export/*.h)
	$(BIN)/mdplugin lammps build
	touch $@

# the main job: 1 ps of NVT aspirin in OpenMM with the shipped model; runs/demo/ is the demo's own scratch
demo: $(INSTALLED) $(PLUGIN)
	$(BIN)/mdplugin run examples/structures/aspirin.xyz --model examples/models/md17-export.pt \
		--steps 2000 --timestep-fs 0.5 --temperature-k 300 --seed 1 --threads 1 \
		--output runs/demo/aspirin --plot --force

test: $(INSTALLED) $(PLUGIN)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(INSTALLED) $(PLUGIN)
	$(BIN)/pip install --quiet -e ".[data,test,bench]"
	$(BIN)/mdplugin bench --output benchmarks/results

clean:
	rm -rf build lammps/build
