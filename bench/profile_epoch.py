"""Where one training epoch of `python train.py` goes, hook by hook: Lightning's
SimpleProfiler around exactly what train.py runs (its callbacks, logger, metrics).

    python bench/profile_epoch.py data.local_path=../shared/data/imdb experiment=keras_seed

Any `train.py` override works. The model's own work shows as the strategy's training_step,
backward, optimizer_step and validation_step; everything else in the table (callbacks,
fetching batches, moving them, logging, checkpoints) is what a hand-written loop would not
pay. The profiler adds a few microseconds to every hook it times. Writes
bench/results/profile_epoch.md.
"""

from __future__ import annotations

import sys
import tempfile

import torch
from benchmark import RESULTS, bench_config, project_epoch
from hydra.utils import instantiate
from lightning.pytorch.profilers import SimpleProfiler

ROWS = 30


def main(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = bench_config(overrides, tmp)
        data = instantiate(cfg.data)
        data.prepare_data()
        data.setup("fit")
        for _ in data.train_dataloader():  # page the cached tensors in, as a second epoch
            pass
        profiler = SimpleProfiler(dirpath=tmp, filename="profile")  # its own report: unread
        project_epoch(cfg, data, profiler=profiler)
    durations = sorted(profiler.recorded_durations.items(), key=lambda kv: -sum(kv[1]))
    lines = [f"`python bench/profile_epoch.py {' '.join(overrides)}`", "",
             f"One epoch (torch {torch.__version__}, {torch.get_num_threads()} threads); the "
             f"{ROWS} largest actions by total time", "",
             "| action | calls | total s | mean us |", "|---|---|---|---|"]
    for action, times in durations[:ROWS]:
        lines.append(f"| {action.replace('|', '/')} | {len(times):,} | {sum(times):.3f} | "
                     f"{sum(times) / len(times) * 1e6:,.0f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile_epoch.md").write_text(table)


if __name__ == "__main__":
    main(sys.argv[1:])
