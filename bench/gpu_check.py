"""The GPU check's work (bench/gpu_check.sh sets up the environment, then runs this): the
seed config trained twice with the same seed on the real IMDB through `python train.py`,
then the 25,000 test texts through the prediction command. Prints and writes (into $OUT,
nothing else there) `gpu_check.json` with the figures, `metrics.json` of the first fit and
`train.log` (its last 200 lines); the cache and run folders live in a temporary folder.

Figures: the card and the versions found, seconds per epoch for each epoch (the first one
apart: it includes cuDNN's benchmark search and warm-up), training and validation texts/s,
test accuracy, the dtype the recurrence computed in, whether the two seeded fits agree, and
the prediction command's texts/s. A failed step fails loudly with its log's last 40 lines.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "lightning", "torchmetrics", "hydra-core", "omegaconf", "datasets",
            "pyarrow", "fsspec", "tokenizers", "tensorboard")


def versions() -> dict[str, Any]:
    import torch

    found: dict[str, Any] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    found["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    return found


def card() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run(command: list[str], log: Path, what: str) -> None:
    """`command` with its output in `log`; on failure its last 40 lines, and exit 1."""
    with log.open("w") as file:
        code = subprocess.run(command, cwd=ROOT, stdout=file, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                  filter(None, [os.environ.get("PYTHONPATH"), str(ROOT / "bench"),
                                                str(ROOT)]))}).returncode
    if code:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        print(f"GPU CHECK FAILED: {what} exited {code}; the last 40 lines of its log:",
              *tail, sep="\n", file=sys.stderr)
        sys.exit(1)


def train_overrides(work: Path, trainer: str, name: str) -> list[str]:
    """`python train.py`'s overrides for one fit: the seed config, no progress bar (a null
    progress_bar callback alone brings Lightning's default one back), the epoch timer."""
    return ["experiment=keras_seed", f"trainer={trainer}", "data.local_path=.data/imdb",
            f"paths.cache_dir={work / 'cache'}", f"hydra.run.dir={work / name}",
            "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false",
            "+callbacks.epoch_times._target_=epoch_times.EpochTimes",
            f"+callbacks.epoch_times.path={work / f'{name}-epochs.json'}"]


def fit(work: Path, trainer: str, name: str) -> dict[str, Any]:
    run_dir, times = work / name, work / f"{name}-epochs.json"
    start = time.perf_counter()
    run([sys.executable, "train.py", *train_overrides(work, trainer, name)],
        work / f"{name}.log", f"train.py ({name})")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"wall_s": time.perf_counter() - start, "metrics": metrics,
            **json.loads(times.read_text())}


def main() -> None:
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu_check-out-"))
    out.mkdir(parents=True, exist_ok=True)
    trainer = os.environ.get("GPU_CHECK_TRAINER", "gpu")
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    report: dict[str, Any] = {"trainer": trainer, "card": card(), "versions": versions()}
    print(json.dumps({"card": report["card"], **report["versions"]}), flush=True)
    try:
        first = fit(work, trainer, "fit1")
        second = fit(work, trainer, "fit2")
        shutil.copy(work / "fit1" / "metrics.json", out / "metrics.json")
        log = (work / "fit1.log").read_text(errors="replace").splitlines()[-200:]
        (out / "train.log").write_text("\n".join(log) + "\n")
        sys.path.insert(0, str(ROOT / "bench"))
        from predict_speed import predict_command

        predict = predict_command(str(work / "fit1"), ".data/imdb/test.parquet")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    keys = ("test/acc", "test/loss", "val/acc_best")
    report.update({
        "epochs": first["epochs"], "first_epoch_s": first["epochs"][0]["epoch_s"],
        "later_epochs_s": [e["epoch_s"] for e in first["epochs"][1:]],
        "test_acc": first["metrics"]["test/acc"], "recurrence_dtype": first["recurrence_dtype"],
        "seeded_fits_agree": all(first["metrics"][k] == second["metrics"][k] for k in keys),
        "second_fit": {k: second["metrics"][k] for k in keys},
        "train_py_wall_s": first["wall_s"], "predict": predict})
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    later = ", ".join(f"{s:.2f}" for s in report["later_epochs_s"])
    last = first["epochs"][-1]
    print(f"card: {report['card'] or 'none'} (trainer={trainer})\n"
          f"seconds per epoch (train 25,000 + validate 25,000): first "
          f"{report['first_epoch_s']:.2f}, then {later}\n"
          f"last epoch: {last['train_texts_per_s']:,.0f} training texts/s, "
          f"{last['val_texts_per_s']:,.0f} validation texts/s\n"
          f"test accuracy {report['test_acc']:.4f}; the recurrence in "
          f"{report['recurrence_dtype']}; two seeded fits agree: "
          f"{report['seeded_fits_agree']} (second: {report['second_fit']['test/acc']:.4f})\n"
          f"train.py wall time {first['wall_s']:.0f} s; prediction command: "
          f"{json.dumps(predict)}\nwritten: {sorted(p.name for p in out.iterdir())} in {out}")


if __name__ == "__main__":
    main()
