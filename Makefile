# Two commands do all the set-up on a fresh machine (Python 3.11+, a C++ compiler optional):
#   make train ARGS="data.local_path=../shared/data/imdb"   # set up, then python train.py ARGS
#   make test                                                # set up, then ruff and pytest
# The virtual environment is created on first use, with the PyTorch build for the machine:
# the CUDA build where an NVIDIA GPU answers nvidia-smi, the CPU build (far smaller)
# elsewhere, from PyTorch's CPU index when it is reachable. Where it is not, the default index
# is used only if it serves a CPU build (a local wheel, a mirror); else set-up stops and says
# what to run, rather than pull the multi-GB CUDA build onto a machine without a GPU.
#   make check-wheel   # the installed form: a wheel in a fresh venv, used from another folder

VENV ?= .venv
PYTHON := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
CPU_INDEX := https://download.pytorch.org/whl/cpu

.PHONY: setup torch train test check-wheel
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(MAKE) --no-print-directory torch VENV=$(VENV)
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	$(PYTHON) -m gru_lightning.runtime.kernels  # the compiled CPU kernels, built once
	touch $@

# PyTorch alone, into $(VENV) (created if missing); kept where the venv already has it.
#: Python compiles the modules it imports on first use, not all of torch's now.
torch:
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "torch $$($(PYTHON) -c 'import torch; print(torch.__version__)') is installed: kept"; \
	elif nvidia-smi >/dev/null 2>&1; then \
	  $(PYTHON) -m pip install --quiet "torch==$(TORCH_VERSION)"; \
	elif $(PYTHON) -c "import socket; socket.create_connection(('download.pytorch.org', 443), 3)" 2>/dev/null; then \
	  $(PYTHON) -m pip install --quiet "torch==$(TORCH_VERSION)" --index-url $(CPU_INDEX); \
	elif $(PYTHON) -m pip install --quiet --dry-run --report - "torch==$(TORCH_VERSION)" \
	    | grep -q '"name": "nvidia-'; then \
	  echo "error: no GPU here, PyTorch's CPU index ($(CPU_INDEX)) is unreachable, and the"; \
	  echo "default index serves the CUDA build of torch (several GB of nvidia-* packages)."; \
	  echo "Install a CPU build of torch $(TORCH_VERSION) into $(VENV) yourself, e.g. from a"; \
	  echo "wheel: $(PYTHON) -m pip install torch-$(TORCH_VERSION)+cpu-...whl; then run make again."; \
	  exit 1; \
	else \
	  $(PYTHON) -m pip install --quiet "torch==$(TORCH_VERSION)"; \
	fi

train: setup
	$(PYTHON) train.py $(ARGS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -rs

check-wheel: setup
	bash tests/installed_wheel.sh
