"""PyTorch's nn.GRU against this project's FusedGRU on CPU: forward, and forward + backward.

    python bench/gru_kernel.py

Input [batch, steps, 128], hidden sizes as below, denormals flushed as train.py does; best
of 3 rounds of 20 calls each, the two kernels alternating. Writes bench/results/gru_kernel.md.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from gru_lightning.runtime.fused_gru import FusedGRU
from gru_lightning.runtime.kernels import gru_kernel

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = [(64, 100, 64), (64, 400, 64), (64, 100, 128), (256, 100, 64)]  # batch, steps, hidden


def milliseconds(fn, calls: int = 20) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    torch.set_flush_denormal(True)
    gru_kernel()  # build or load outside the timings
    lines = ["`python bench/gru_kernel.py`", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads", "",
             "| batch | steps | hidden | nn.GRU fwd ms | fused fwd ms | nn.GRU fwd+bwd ms | "
             "fused fwd+bwd ms | speed-up fwd+bwd |", "|---|---|---|---|---|---|---|---|"]
    for batch, steps, hidden in SHAPES:
        torch.manual_seed(0)
        reference = nn.GRU(128, hidden, batch_first=True)
        fused = FusedGRU(128, hidden, batch_first=True)
        fused.load_state_dict(reference.state_dict())
        x = torch.randn(batch, steps, 128, requires_grad=True)
        best: dict[str, list[float]] = {}
        for _ in range(3):
            for name, module in (("torch", reference), ("fused", fused)):
                with torch.no_grad():
                    forward = milliseconds(lambda m=module, x=x: m(x))
                both = milliseconds(lambda m=module, x=x: m(x)[1].sum().backward())
                old = best.get(name, [float("inf")] * 2)
                best[name] = [min(old[0], forward), min(old[1], both)]
        (tf, tb), (ff, fb) = best["torch"], best["fused"]
        lines.append(f"| {batch} | {steps} | {hidden} | {tf:.2f} | {ff:.2f} | {tb:.2f} | "
                     f"{fb:.2f} | {tb / fb:.2f}x |")
        print(lines[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gru_kernel.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
