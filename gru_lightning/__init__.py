"""gru-lightning: the Keras GRU IMDB notebook as a PyTorch Lightning + Hydra project."""

__version__ = "0.2.0"
