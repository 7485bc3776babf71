# Two commands do all the set-up on a fresh machine (Python 3.10+, a C++ compiler optional):
#   make train ARGS="data.local_path=../shared/data/imdb"   # set up, then python train.py ARGS
#   make test                                                # set up, then ruff and pytest
# The virtual environment is created on first use, with the PyTorch build for the machine:
# the CUDA build where an NVIDIA GPU answers nvidia-smi, the CPU build (far smaller)
# elsewhere, from PyTorch's CPU index when it is reachable.

VENV ?= .venv
PYTHON := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
CPU_INDEX := https://download.pytorch.org/whl/cpu

.PHONY: setup train test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	if nvidia-smi >/dev/null 2>&1; then \
	  $(PYTHON) -m pip install --quiet "torch==$(TORCH_VERSION)"; \
	elif $(PYTHON) -c "import socket; socket.create_connection(('download.pytorch.org', 443), 3)" 2>/dev/null; then \
	  $(PYTHON) -m pip install --quiet "torch==$(TORCH_VERSION)" --index-url $(CPU_INDEX); \
	else \
	  $(PYTHON) -m pip install --quiet "torch==$(TORCH_VERSION)"; \
	fi
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	$(PYTHON) -m gru_lightning.runtime.kernels  # the compiled CPU kernels, built once
	touch $@

train: setup
	$(PYTHON) train.py $(ARGS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -rs
