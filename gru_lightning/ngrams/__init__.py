"""The n-gram model `ngram=nbsvm` stacks on the network: its features (featurizer.py), its
fit (logistic.py) and the model that joins them (model.py)."""

from gru_lightning.ngrams.model import FORMAT_VERSION, NGramModel

__all__ = ["FORMAT_VERSION", "NGramModel"]
