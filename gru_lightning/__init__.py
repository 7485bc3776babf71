"""gru-lightning: a from-scratch recurrent text classifier, trained with PyTorch Lightning and
configured with Hydra; its defaults are the Keras GRU IMDB notebook's."""

__version__ = "0.7.0"
