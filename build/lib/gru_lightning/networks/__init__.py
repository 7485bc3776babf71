"""Networks: token ids -> logits, one file each (the contract in base.py)."""

from gru_lightning.networks.base import NetworkSettings
from gru_lightning.networks.rnn import RNN, RNNClassifier

__all__ = ["RNN", "NetworkSettings", "RNNClassifier"]
