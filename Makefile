# The two commands: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export ORT_DISABLE_TELEMETRY := 1
export MUJOCO_GL ?= egl
export ROS_LOG_DIR ?= $(CURDIR)/runs/ros_log
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export MPLBACKEND := Agg

.PHONY: demo test test-all install bench clean

$(STAMP): setup.cfg setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, from the local CPU wheel, so that nothing pulls a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[ros,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/onboard demo --fresh

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "" --timeout=3600

bench: $(STAMP)
	$(BIN)/onboard bench all

clean:
	rm -rf runs .pytest_cache
