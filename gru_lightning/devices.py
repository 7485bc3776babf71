"""Where a checkpoint runs (predict, evaluate, serve): the device a user names, checked
before anything is loaded onto it."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` (default: cuda where there is one, else cpu), or a ValueError that says what
    to give instead."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device torch knows: give cpu, cuda, "
                         "cuda:1, mps, ...") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this torch sees no CUDA GPU "
                         "(torch.cuda.is_available() is False); give cpu")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"device {device!r}: this machine has {count} CUDA GPU(s), "
                         f"cuda:0 to cuda:{count - 1}")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: Apple's MPS backend is not available here (it "
                         "needs macOS on Apple silicon); give cpu")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r}: a checkpoint runs on cpu, cuda or mps")
    return resolved
