#!/usr/bin/env bash
# The project's GPU check in one command: the seed config (experiment=keras_seed) trained
# twice with trainer=gpu on the real IMDB, then the 25,000 test reviews through `predict`
# (bench/gpu_check.py: the figures, and what it writes into $OUT: gpu_check.json,
# metrics.json, the log's tail; nothing else).
#
#   bash bench/gpu_check.sh prepare   # here, once: wheels into .whl/, IMDB into .data/imdb/
#   bash bench/gpu_check.sh           # on the GPU machine (carry .whl and .data)
#
# The workplace's GPU machines have torch, lightning, torchmetrics, tokenizers and
# tensorboard, but not hydra-core, omegaconf or datasets, and reach no package index: the
# missing ones travel as wheels (Python 3.12 there; datasets' other needs, pyarrow, pandas,
# xxhash, fsspec, huggingface_hub and PyYAML, are in its image). GPU_CHECK_TRAINER=cpu runs the same
# steps on the CPU, to try the script where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "prepare" ]]; then
  rm -rf .whl && mkdir -p .whl .data/imdb
  pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl hydra-core==1.3.8 omegaconf==2.3.1 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3  # an sdist only on PyPI
  cp ../shared/data/imdb/train.parquet ../shared/data/imdb/test.parquet .data/imdb/
  ls .whl .data/imdb
  exit 0
fi

TRAINER="${GPU_CHECK_TRAINER:-gpu}"
if ! python3 -c "import hydra, datasets" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
# datasets travels without its dependencies: a missing or too old one is named here, not in
# a traceback half-way through.
python3 -c "import datasets, pyarrow, fsspec" || { echo "GPU CHECK FAILED: datasets, pyarrow or fsspec does not import (above)"; exit 1; }
GPU_CHECK_TRAINER="$TRAINER" python3 bench/gpu_check.py
