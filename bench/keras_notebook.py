"""The Keras notebook's model, timed: the anchor side of bench/benchmark.py.

    python bench/keras_notebook.py ARRAYS.npz [--epochs 2]

ARRAYS.npz holds `x_train`, `y_train`, `x_val`, `y_val`: token ids padded to one length and
0/1 labels (benchmark.py writes the project's own, so both sides see the same reviews and
preprocessing). This trains the notebook's model on them as the notebook does
(../shared/seed/keras_gru_imdb_notebook.txt: Embedding(10000, 128) -> GRU(64) -> Dense(1,
sigmoid), Adam, binary cross-entropy, batch 64, validation on the second split after every
epoch) and prints one JSON line: for each epoch, the seconds of its training part and of its
validation part, and the validation accuracy. It runs in its own process (benchmark.py
starts it), so TensorFlow's threads and PyTorch's never share one.

Needs TensorFlow (`pip install -e ".[keras]"`); the rest of the project does not.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # both before Keras is imported
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np


class EpochParts(keras.callbacks.Callback):
    """Wall time of each epoch's training batches and of its validation."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[dict[str, float]] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        end = time.perf_counter()
        self.epochs.append({"train_s": self.train_end - self.start,
                            "val_s": end - self.train_end, "epoch_s": end - self.start,
                            "val_acc": float((logs or {})["val_accuracy"])})


def notebook_model(max_features: int, maxlen: int) -> keras.Model:
    model = keras.Sequential([
        keras.Input(shape=(maxlen,), dtype="int32"),
        keras.layers.Embedding(max_features, 128),
        keras.layers.GRU(64, return_sequences=False),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arrays", help=".npz with x_train, y_train, x_val, y_val")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-features", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    arrays = np.load(args.arrays)
    x_train, x_val = arrays["x_train"].astype("int32"), arrays["x_val"].astype("int32")
    y_train, y_val = arrays["y_train"].astype("float32"), arrays["y_val"].astype("float32")
    keras.utils.set_random_seed(args.seed)
    model = notebook_model(args.max_features, x_train.shape[1])
    parts = EpochParts()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
              validation_data=(x_val, y_val), callbacks=[parts], verbose=0)
    import tensorflow as tf  # keras' backend, imported by now: its version for the record

    print(json.dumps({"keras": keras.__version__, "tensorflow": tf.__version__,
                      "parameters": model.count_params(), "epochs": parts.epochs}))


if __name__ == "__main__":
    main()
