"""The compiled CPU kernels in `csrc/`, built with the system's C++ compiler on first use and
cached by torch across processes (`~/.cache/torch_extensions`; `TORCH_EXTENSIONS_DIR` moves
it). Each has a pure-PyTorch fallback with the same results where no compiler is found."""

from __future__ import annotations

import logging
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)
CSRC = Path(__file__).resolve().parent / "csrc"
# fast-math lets GCC call glibc's vector exp/tanh, 3x faster than the scalar ones here.
_VECTOR_MATH = sys.platform.startswith("linux")


class KernelUnavailable(RuntimeError):
    """A kernel could not be built (no C++ compiler or ninja)."""


def _build(name: str, source: str, cflags: list[str], ldflags: list[str]) -> ModuleType:
    from torch.utils import cpp_extension

    if not (CSRC / source).is_file():
        raise KernelUnavailable(
            f"its source {CSRC / source} is missing: this gru-lightning installation is "
            "incomplete; reinstall it (pip install --force-reinstall gru-lightning)")
    try:
        module = cpp_extension.load(name=name, sources=[str(CSRC / source)],
                                    extra_cflags=cflags, extra_ldflags=ldflags)
    except (OSError, RuntimeError, ImportError, subprocess.CalledProcessError) as error:
        lines = str(error).strip().splitlines()
        raise KernelUnavailable(
            f"could not build {source}: {lines[-1] if lines else type(error).__name__}. It "
            "needs a C++ compiler (g++) and ninja (`pip install ninja`).") from error
    log.info("Compiled kernel %s loaded (%s)", source, module.__file__)
    return module


@cache
def gru_kernel() -> ModuleType:
    """The fused GRU recurrence (`csrc/gru_cpu.cpp`, used by `fused_gru.FusedGRU`)."""
    return _build("gru_lightning_gru_cpu", "gru_cpu.cpp",
                  ["-O3", *(["-ffast-math"] if _VECTOR_MATH else [])],
                  ["-lmvec"] if _VECTOR_MATH else [])


@cache
def word_ids_kernel() -> ModuleType | None:
    """The word-id kernel (`csrc/word_ids.cpp`, used by `preprocessing.TextEncoder`), or None
    where it cannot be built: `tokenizers` does all the work then, same ids, ~50x slower."""
    try:
        return _build("gru_lightning_word_ids", "word_ids.cpp", ["-O3"], [])
    except KernelUnavailable as error:
        log.info("Word-id kernel unavailable (%s); tokenizing with `tokenizers` alone", error)
        return None


def _build_now(name: str) -> str:
    try:
        return f"{name}: {'built' if globals()[name]() is not None else 'unavailable'}"
    except KernelUnavailable as error:
        return f"{name}: unavailable ({error})"


if __name__ == "__main__":
    # `python -m gru_lightning.runtime.kernels`: build both now, as a first run would (make
    # setup does, so the first training or test run starts without the ~40 s per kernel),
    # each in a process of its own: the compiler is single-threaded.
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        print("\n".join(pool.map(_build_now, ("gru_kernel", "word_ids_kernel"))))
