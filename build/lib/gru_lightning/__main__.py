"""`python -m gru_lightning COMMAND [ARGS]`: the `gru-lightning` command (cli.py)."""

import sys

from gru_lightning.cli import main

sys.exit(main())
