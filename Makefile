# The two commands of the README: `make demo` and `make test`. Each creates .venv/ when missing,
# installs the pinned dependencies, builds the extension, then runs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
BUILT := $(VENV)/.extension-built
CMAKE_BUILD := build/cmake
SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h') setup.py pyproject.toml
# Triton runs on the CPU only through its interpreter; harmless where a GPU is present for tests
# that pick CUDA tensors, since the CI machine has none.
TEST_ENV := TRITON_INTERPRET=1 OMP_NUM_THREADS=$(shell nproc)

.PHONY: demo demo-op test pytest ctest bench lint format clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# deepsplines (the spline paper's code, the peer of tests/test_spline_deepsplines.py and
# bench/bench_spline.py) declares torchvision, which would pull another torch: it is installed
# without dependencies (its ds_modules need only torch and numpy).
$(DEPS): requirements.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps deepsplines==1.0.0
	touch $@

$(BUILT): $(DEPS) $(SOURCES)
	$(PY) -m pip install -q -e . --no-build-isolation --no-deps
	touch $@

# The package's main job: fixed vs learned vs a random permutation vs Sinkhorn, three seeds each,
# on the digits bundled with scikit-learn; about 5 minutes on 2 cores. The op-level demo
# (channel_gather next to F.channel_shuffle, with timings) is `make demo-op`.
demo: $(BUILT)
	rm -rf runs/demo
	$(PY) -m autoshuffle_ext.train --compare fixed,learned,random,sinkhorn --seeds 0,1,2 \
		--epochs 8 --out runs/demo

demo-op: $(BUILT)
	$(PY) -m autoshuffle_ext.demo

test: lint ctest pytest

pytest: $(BUILT)
	$(TEST_ENV) $(PY) -m pytest -q tests

ctest: $(DEPS)
	mkdir -p $(CMAKE_BUILD)
	cmake -S . -B $(CMAKE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
		-DPython3_EXECUTABLE=$(abspath $(PY)) > $(CMAKE_BUILD).log 2>&1 || (cat $(CMAKE_BUILD).log; exit 1)
	cmake --build $(CMAKE_BUILD) -j 2
	cd $(CMAKE_BUILD) && ctest --output-on-failure

bench: $(BUILT)
	$(TEST_ENV) $(PY) -m pytest -q bench --benchmark-only --benchmark-columns=min,median,max,rounds

lint: $(DEPS)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(DEPS)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf build $(VENV) *.egg-info autoshuffle_ext/*.so
