"""Training speed on a busy machine: alone, beside one busy process, beside a second training.

    python bench/load.py data.local_path=../shared/data/imdb
    python bench/load.py data.local_path=../shared/data/imdb --variants default,old --repeats 2

Each measurement is `python train.py experiment=keras_seed` for STEPS training steps (no
validation, no test), in a subprocess, with a thread setting (a "variant": environment
variables and overrides) under one condition:
- alone;
- beside one busy process (`python3 -c "while True: pass"`, one core's worth of load);
- beside a second training (the same command with the same variant, running for longer).
The seconds are the run's own Timer (`seconds_per_epoch` in metrics.json), so start-up is
not counted. Conditions and variants alternate in every repeat, so drift on the machine
hits all of them. Writes bench/results/load.{json,md}.
"""

from __future__ import annotations

import argparse
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
RESULTS = ROOT / "bench" / "results"
STEPS = 150

# name: (code: "baseline" or "this", environment, train.py overrides, what it is)
VARIANTS: dict[str, tuple[str, dict[str, str], list[str], str]] = {
    "old": ("baseline", {}, [],
            "the baseline code (--baseline), as it was: PyTorch's threads (one per core)"),
    "old threads=1": ("baseline", {}, ["num_threads=1"], "the baseline with one thread"),
    "old passive": ("baseline", {"OMP_WAIT_POLICY": "PASSIVE"}, [],
                    "the baseline with OMP_WAIT_POLICY=PASSIVE (threads sleep at barriers)"),
    "old spin=10k": ("baseline", {"GOMP_SPINCOUNT": "10000"}, [],
                     "the baseline with GOMP_SPINCOUNT=10000 (spin shorter, then sleep)"),
    "kernel": ("this", {}, ["num_threads=null"],
               "this code's kernel (its recurrence on the calling thread), PyTorch's threads"),
    "kernel passive": ("this", {"OMP_WAIT_POLICY": "PASSIVE"}, ["num_threads=null"],
                       "this code's kernel with OMP_WAIT_POLICY=PASSIVE"),
    "default": ("this", {}, [], "this code's default: num_threads=auto"),
}
CONDITIONS = ("alone", "busy process", "second training")


def train_command(out: Path, overrides: list[str], steps: int, extra: list[str]) -> list[str]:
    return [sys.executable, "train.py", "experiment=keras_seed", "trainer.max_epochs=1",
            f"+trainer.limit_train_batches={steps}", "+trainer.limit_val_batches=0",
            "test=false", "callbacks.progress_bar=null",
            "callbacks.model_summary=null", f"hydra.run.dir={out}", *extra, *overrides]


def measure(variant: str, condition: str, tmp: Path, extra: list[str], steps: int,
            baseline: Path | None) -> float:
    code, env_vars, overrides, _ = VARIANTS[variant]
    cwd = tmp / "this" if code == "this" else baseline
    if cwd is None:
        raise SystemExit(f"variant {variant!r} needs --baseline REV")
    env = {**os.environ, **env_vars}
    if code == "baseline":  # its own kernel build, apart from this code's
        env["TORCH_EXTENSIONS_DIR"] = str(cwd / ".torch_extensions")
    extra = [*extra, f"paths.cache_dir={ROOT / '.cache'}"]  # one tokenization for both
    neighbour = None
    if condition == "busy process":
        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    elif condition == "second training":
        neighbour = subprocess.Popen(
            train_command(tmp / f"neighbour-{time.monotonic_ns()}", overrides, 100_000, extra),
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(8)  # past its start-up, into its training steps
    out = tmp / f"run-{time.monotonic_ns()}"
    try:
        result = subprocess.run(train_command(out, overrides, steps, extra), cwd=cwd, env=env,
                                capture_output=True, text=True, timeout=900)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    if result.returncode != 0:
        raise RuntimeError(f"{variant} / {condition} failed:\n{result.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())["seconds_per_epoch"]


def markdown(report: dict[str, Any]) -> str:
    lines = [f"`python bench/load.py {' '.join(report['command'])}`", "",
             f"{report['steps']} training steps of `experiment=keras_seed` (batch 64, 100 tokens), "
             f"seconds from the run's Timer; {report['cpus']} cores, torch {report['torch']}; "
             f"median of {report['repeats']} alternating repeats (all runs in the JSON).", "",
             "| variant | " + " | ".join(CONDITIONS) + " | busy / alone | second / alone |",
             "|---|" + "---|" * (len(CONDITIONS) + 2)]
    for name, row in report["median"].items():
        alone = row["alone"]
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.2f}" for c in CONDITIONS)
                     + f" | {row['busy process'] / alone:.2f}x"
                     + f" | {row['second training'] / alone:.2f}x |")
    if "old" in report["median"] and "default" in report["median"]:
        old, new = report["median"]["old"], report["median"]["default"]
        lines += ["", f"default / old, alone: **{new['alone'] / old['alone']:.2f}x**; "
                  f"default busy / default alone: "
                  f"**{new['busy process'] / new['alone']:.2f}x**"]
    lines += ["", "Variants:", ""]
    lines += [f"- `{name}`: {VARIANTS[name][3]}" for name in report["median"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. data.local_path=")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--baseline", metavar="REV",
                        help="git revision of the code to compare with (checked out in a "
                             "temporary worktree); needed by the variants named old*")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--name", default="load",
                        help="results go to bench/results/NAME.{json,md}")
    args = parser.parse_args()
    variants = args.variants.split(",")
    # Paths as seen from here: the baseline runs in another folder.
    overrides = [f"{o.split('=', 1)[0]}={Path(o.split('=', 1)[1]).resolve()}"
                 if o.startswith("data.local_path=") else o for o in args.overrides]
    runs: dict[str, dict[str, list[float]]] = {v: {c: [] for c in CONDITIONS} for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        # This code as it is now, copied, so that edits during a long run do not change it.
        this = Path(tmp) / "this"
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                               check=True, capture_output=True, text=True).stdout.split()
        for name in files:
            if (ROOT / name).is_file():
                (this / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, this / name)
        baseline = None
        if args.baseline:
            baseline = Path(tmp) / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline],
                           cwd=ROOT, check=True, capture_output=True)
            # Build its kernel outside the timings.
            measure("old", "alone", Path(tmp), overrides, 1, baseline)
        for variant in variants:  # warm-up: kernel builds, first-run caches
            measure(variant, "alone", Path(tmp), overrides, 1, baseline)
        for repeat in range(args.repeats):
            for condition in CONDITIONS:
                for variant in variants:
                    seconds = measure(variant, condition, Path(tmp), overrides, args.steps,
                                      baseline)
                    runs[variant][condition].append(seconds)
                    print(f"repeat {repeat}: {variant:14} {condition:16} {seconds:6.2f} s",
                          flush=True)
        if baseline is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT,
                           check=True)
    import torch

    median = {v: {c: sorted(r)[len(r) // 2] for c, r in row.items()} for v, row in runs.items()}
    report = {"command": sys.argv[1:], "baseline": args.baseline, "steps": args.steps,
              "repeats": args.repeats, "cpus": os.cpu_count(), "torch": torch.__version__,
              "runs": runs, "median": median}
    table = markdown(report)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(table)


if __name__ == "__main__":
    main()
