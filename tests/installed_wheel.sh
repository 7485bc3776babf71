#!/usr/bin/env bash
# The installed form, as a user gets it (`make check-wheel`, run by .ci/run): the wheel built
# from this checkout, installed with its `serve` extra in a fresh venv outside the checkout,
# then used from another folder: the compiled kernels built from the wheel's own sources,
# `gru-lightning train` one epoch on a small CSV with them (the log must say so), then `predict`,
# `evaluate` and `serve` with the checkpoint. Fails at the first step that does not work.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/gru-lightning-wheel.XXXXXX")"
trap 'status=$?; [ $status -ne 0 ] && echo "check-wheel FAILED (logs in $work)"; exit $status' EXIT
step() { echo "== check-wheel: $*"; }

step "build the wheel"
# From a copy of the source files (tracked, and new ones git does not ignore): setuptools
# builds in the source folder, and a stale build/ there would ship files since deleted.
mkdir "$work/src"
git -C "$repo" ls-files -z --cached --others --exclude-standard \
  | (cd "$repo" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _) \
  | tar -C "$repo" --null -T - -cf - | tar -C "$work/src" -xf -
"$repo/.venv/bin/python" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$work/src"
wheel=$(ls "$work"/dist/gru_lightning-*.whl)
# What the package needs at run time, by name: configs, the kernels' sources, the command.
"$repo/.venv/bin/python" - "$wheel" <<'EOF'
import sys
import zipfile

wheel = zipfile.ZipFile(sys.argv[1])
names = set(wheel.namelist())
needed = ["gru_lightning/conf/train.yaml", "gru_lightning/conf/data/files.yaml",
          "gru_lightning/runtime/csrc/gru_cpu.cpp", "gru_lightning/runtime/csrc/word_ids.cpp"]
missing = [name for name in needed if name not in names]
entry_points = "".join(wheel.read(n).decode() for n in names
                       if n.endswith(".dist-info/entry_points.txt"))
if "gru-lightning = gru_lightning.cli:main" not in entry_points:
    missing.append("the gru-lightning command (entry_points.txt)")
sys.exit(f"the wheel lacks: {', '.join(missing)}" if missing else 0)
EOF

step "install it in a fresh venv ($work/venv)"
make --no-print-directory -C "$repo" torch VENV="$work/venv" > "$work/torch.log"
"$work/venv/bin/python" -m pip install --quiet "$wheel[serve]"
export PATH="$work/venv/bin:$PATH" TORCH_EXTENSIONS_DIR="$work/torch_extensions" HF_HUB_OFFLINE=1
mkdir "$work/run" && cd "$work/run"
python -c "import gru_lightning, sys; p = gru_lightning.__file__; \
sys.exit(0 if p.startswith('$work/venv/') else f'gru_lightning imported from {p}')"

step "build the kernels from the wheel's sources (into $TORCH_EXTENSIONS_DIR)"
python -m gru_lightning.runtime.kernels | tee "$work/kernels.log"
[ "$(grep -c ": built$" "$work/kernels.log")" = 2 ] || { echo "a kernel did not build"; exit 1; }

step "train one epoch on a small CSV, from $work/run"
python - <<'EOF'
import csv
import random

rng = random.Random(0)
good = "wonderful moving brilliant superb touching delightful".split()
bad = "dreadful boring awful tedious clumsy dull".split()
filler = "the film story actors plot scenes music ending".split()
with open("reviews.csv", "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(["text", "label"])
    for i in range(400):
        label = i % 2
        words = rng.choices(filler, k=12) + rng.choices(good if label else bad, k=3)
        rng.shuffle(words)
        writer.writerow([" ".join(words), "pos" if label else "neg"])
EOF
gru-lightning train data=files data.train_file=reviews.csv trainer.max_epochs=1 \
  hydra.run.dir=outputs/run 2>&1 | tee "$work/train.log"
for source in gru_cpu.cpp word_ids.cpp; do  # loaded from what was just built
  grep -q "Compiled kernel $source loaded ($work/torch_extensions/" "$work/train.log" \
    || { echo "the training log does not say the kernel $source was used"; exit 1; }
done
ckpt=$(ls outputs/run/checkpoints/epoch*.ckpt)
test -f outputs/run/metrics.json

step "predict, evaluate"
gru-lightning predict "$ckpt" "a wonderful brilliant film" "a dull tedious film" | tee "$work/predict.log"
[ "$(grep -cE "^ +[01]  (pos|neg) " "$work/predict.log")" = 2 ] \
  || { echo "predict printed no label for the two texts"; exit 1; }
gru-lightning evaluate "$ckpt" --file reviews.csv --json out/report.json
python -c "import json; r = json.load(open('out/report.json')); assert r['texts'] == 400, r"

step "serve"
port=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
gru-lightning serve "$ckpt" --port "$port" > "$work/serve.log" 2>&1 &
server=$!
answer=""
for _ in $(seq 120); do
  answer=$(python - "$port" 2>/dev/null <<'EOF'
import json
import sys
import urllib.request

request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/predict",
                                 data=json.dumps({"texts": ["a superb film"]}).encode(),
                                 headers={"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(request, timeout=5))["predictions"][0]["label"])
EOF
) && break
  sleep 1
done
kill -TERM "$server"; wait "$server" || true
[[ "$answer" =~ ^(pos|neg)$ ]] || { echo "serve answered ${answer:-nothing}"; cat "$work/serve.log"; exit 1; }
echo "check-wheel: the installed wheel trains (kernels built from its sources), predicts, evaluates and serves"
rm -rf "$work"
