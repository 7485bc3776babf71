"""`gru-lightning COMMAND [ARGS]`, the console command an installed package puts on the PATH:
each command is the module's own entry point, with the same arguments.

    gru-lightning train [HYDRA OVERRIDES]     # python -m gru_lightning.train (train.py)
    gru-lightning predict CKPT TEXT ...       # python -m gru_lightning.predict
    gru-lightning evaluate CKPT --file F      # python -m gru_lightning.evaluate
    gru-lightning serve CKPT                  # python -m gru_lightning.serve
    gru-lightning report SWEEP_FOLDER         # python -m gru_lightning.report
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# Imported on demand: Lightning and Hydra cost seconds that predict and serve do without.
COMMANDS = {
    "train": ("gru_lightning.train", "fit and test a model (Hydra overrides, as train.py)"),
    "predict": ("gru_lightning.predict", "classify texts with a checkpoint"),
    "evaluate": ("gru_lightning.evaluate", "score a checkpoint on labelled data"),
    "serve": ("gru_lightning.serve", "serve a checkpoint over HTTP (extra: serve)"),
    "report": ("gru_lightning.report", "a sweep's results side by side"),
}


def usage() -> str:
    lines = ["usage: gru-lightning COMMAND [ARGS]  (gru-lightning COMMAND --help for its own)",
             "", "commands:"]
    lines += [f"  {name:9} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"gru-lightning: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    if command == "train":
        # Hydra reads its overrides from sys.argv, and exits with 1 itself on an error.
        sys.argv = [f"{sys.argv[0]} train", *rest]
        module.main()
        return 0
    return module.main(rest)
