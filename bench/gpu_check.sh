#!/usr/bin/env bash
# The project's GPU check in one command: the seed config (experiment=keras_seed) trained and
# tested with trainer=gpu on the real IMDB, then the 25,000 test reviews through `predict`.
# Prints the card, seconds per epoch, training samples/s, inference reviews/s and accuracy.
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

OUT="${OUT:-$(mktemp -d)}"
TRAINER="${GPU_CHECK_TRAINER:-gpu}"
if ! python3 -c "import hydra, datasets" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

start=$(date +%s)
python3 train.py experiment=keras_seed trainer="$TRAINER" data.local_path=.data/imdb \
  paths.cache_dir="$OUT/cache" hydra.run.dir="$OUT/run" \
  callbacks.progress_bar=null +trainer.enable_progress_bar=false \
  2>&1 | tee "$OUT/train.log" | grep -E "Test Accuracy|Error|error" || true
echo "train.py wall time: $(( $(date +%s) - start )) s (start-up, tokenization, 3 epochs, test)"
python3 bench/predict_speed.py "$OUT/run" .data/imdb/test.parquet | tail -3
python3 - "$OUT/run/metrics.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
epoch = m["seconds_per_epoch"]
print(f"status {m['status']}; seconds per epoch {epoch:.2f} (train 25,000 + validate 25,000); "
      f"~{25000 / epoch:,.0f} reviews/s through an epoch; test accuracy {m['test/acc']:.4f}")
EOF
