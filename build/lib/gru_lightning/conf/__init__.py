# Makes conf/ the package gru_lightning.conf inside the wheel (pyproject.toml's package-dir), so
# an installed gru-lightning finds its Hydra configs; a checkout reads this folder directly.
