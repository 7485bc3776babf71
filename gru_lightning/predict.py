"""Classify new texts with a trained checkpoint, from Python or the shell.

    python -m gru_lightning.predict CKPT "A wonderful film." "Dull and far too long."
    python -m gru_lightning.predict CKPT --file texts.txt          # one text per line
    python -m gru_lightning.predict CKPT --file texts.csv --text-column review --jsonl
    cat texts.txt | python -m gru_lightning.predict CKPT --file -
    python -m gru_lightning.predict CKPT --export exported/        # torch.export + tokenizer

    from gru_lightning.predict import Predictor
    Predictor.from_checkpoint("last.ckpt").predict(["A wonderful film."])

Plain argparse, not Hydra: texts are free text, and Hydra's override grammar would
reinterpret their commas, quotes and `=` signs. No Lightning either: the network, its text
encoder and the stack are all a prediction needs, and Lightning's import costs seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gru_lightning import checkpoints
from gru_lightning.checkpoints import CheckpointError
from gru_lightning.devices import resolve_device
from gru_lightning.networks.base import probabilities
from gru_lightning.preprocessing import PAD_ID, UNK_ID, TextEncoder
from gru_lightning.settings import positive_int
from gru_lightning.stack import Stack
from gru_lightning.tables import prediction_table
from gru_lightning.textfiles import read_texts


@dataclass
class Prediction:
    """One text's prediction, as `pipeline("text-classification")` gives it: `label` and
    `score`, the probability of that label."""

    label: str | None  # a class name, e.g. "pos"; None where the text could not be classified
    score: float | None  # P(label)
    warning: str | None = None
    error: str | None = None
    # The classes' probabilities, best first: every class's (all_scores) or the top k's.
    scores: dict[str, float] | None = None


class Predictor:
    """A trained network plus the exact preprocessing it was trained with (and the model
    stacked on it, if any).

    Args:
        network: the trained network (token ids -> logits, networks/).
        text_encoder: how text becomes its ids.
        class_names: the classes, in the order of the network's logits.
        stack: the model stacked on the network (stack.py), or None.
        device: where the network runs; default: cuda if any.
        class_values: the raw training label of each class, where the data named no classes
            itself (labels 1-4 named by data.label_names), for scoring labelled data.
    """

    def __init__(self, network: nn.Module, text_encoder: TextEncoder, class_names: Sequence[str],
                 stack: Stack | None = None, device: str | torch.device | None = None,
                 class_values: Sequence[str] | None = None) -> None:
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.encoder = text_encoder
        self.class_names = list(class_names)
        self.binary = len(self.class_names) == 2
        self.stack = stack
        self.class_values = list(class_values) if class_values is not None else None

    @classmethod
    def from_checkpoint(cls, path: str | Path,
                        device: str | torch.device | None = None) -> Predictor:
        """Load a checkpoint written by `python train.py`; needs no access to the dataset."""
        return cls.from_contents(checkpoints.read(path), path, device)

    @classmethod
    def from_contents(cls, checkpoint: dict[str, Any], path: str | Path,
                      device: str | torch.device | None = None) -> Predictor:
        """`from_checkpoint` on a checkpoint already read (`checkpoints.read(path)`)."""
        path = Path(path)
        if checkpoint.get("text_encoder") is None:
            raise CheckpointError(
                f"{str(path)!r} holds no preprocessing (vocabulary, maxlen, padding): it was "
                "not written by gru-lightning's train.py"
            )
        try:
            network = checkpoints.network_settings(checkpoint).build(checkpoint["num_classes"])
            prefix = "net."
            network.load_state_dict({k[len(prefix):]: v for k, v in
                                     checkpoint["state_dict"].items() if k.startswith(prefix)})
            encoder = TextEncoder.from_dict(checkpoint["text_encoder"])
            stack = checkpoints.stack(checkpoint)
        except (TypeError, ValueError, RuntimeError, KeyError) as error:
            raise CheckpointError(
                f"{str(path)!r} is incompatible with this version of gru-lightning: {error}"
            ) from error
        return cls(network, encoder, checkpoint["class_names"], stack, device,
                   checkpoint.get("class_values"))

    @torch.inference_mode()
    def _classify(self, texts: Sequence[str], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities (see `predict_proba`) and the number of in-vocabulary words, per text."""
        positive_int("batch_size", batch_size)
        width = () if self.binary else (len(self.class_names),)
        chunks = [torch.zeros(0, *width)]
        known_words = [torch.zeros(0, dtype=torch.long)]
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            ids = self.encoder.encode(chunk)
            known_words.append(((ids != PAD_ID) & (ids != UNK_ID)).sum(dim=1))
            logits = self.network(ids.to(self.device))
            if self.stack is not None:
                logits = self.stack.text_logits(logits, chunk)
            chunks.append(probabilities(logits).cpu())
        return torch.cat(chunks), torch.cat(known_words)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 1024) -> torch.Tensor:
        """On the CPU: for two classes P(second class) per text `[n]`; for more, every class's
        probability `[n, classes]`, columns in the order of `class_names`."""
        return self._classify(list(texts), batch_size)[0]

    def predict(self, texts: Sequence[str], batch_size: int = 1024, top_k: int | None = None,
                all_scores: bool = False) -> list[Prediction]:
        """A label and its probability (`score`) per text, and with `top_k` or `all_scores`
        the best k or all classes' probabilities (`scores`); a text that cannot be
        classified gets an error and the others are unaffected."""
        if top_k is not None:
            positive_int("top_k", top_k)
        shown = len(self.class_names) if all_scores else top_k
        texts = list(texts)
        results: list[Prediction | None] = [None] * len(texts)
        usable = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                results[i] = Prediction(None, None, error=f"not text: {type(text).__name__}")
            elif not text.strip():
                results[i] = Prediction(None, None, error="empty text")
            else:
                usable.append(i)
        chances, known_words = self._classify([texts[i] for i in usable], batch_size)
        names = self.class_names
        for i, p, known in zip(usable, chances.tolist(), known_words.tolist(), strict=True):
            warning = None if known else (
                "no word of this text is in the model's vocabulary: the prediction says "
                "nothing about it"
            )
            by_class = [1.0 - p, p] if self.binary else p
            # Two classes: the second at P >= 0.5, as the metrics and the stack decide it.
            best = int(p >= 0.5) if self.binary else max(range(len(p)), key=p.__getitem__)
            ranked = sorted(range(len(by_class)), key=lambda k: (k != best, -by_class[k]))
            scores = {names[k]: by_class[k] for k in ranked[:shown]} if shown else None
            results[i] = Prediction(names[best], by_class[best], warning=warning, scores=scores)
        return results  # type: ignore[return-value]

    def export(self, directory: str | Path) -> Path:
        """Write `model.pt2` (torch.export; load with `torch.export.load(...).module()`, takes
        int64 ids `[batch, maxlen]`, returns logits) and `text_encoder.json` beside it."""
        if self.stack is not None:
            raise ValueError(f"this checkpoint stacks {self.stack.describe()} on the network, "
                             "which torch.export cannot take: export covers the network alone; "
                             "use Predictor for the stack")
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"cannot export to {str(directory)!r}: it is a file; give a folder "
                             "(created where missing)")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"cannot export to {str(directory)!r}: {error.strerror}") from None
        network = self.network.to("cpu")
        example = torch.zeros((2, self.encoder.maxlen), dtype=torch.long)
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(network, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, directory / "model.pt2")
        (directory / "text_encoder.json").write_text(json.dumps(self.encoder.to_dict()))
        self.network.to(self.device)
        return directory / "model.pt2"


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gru_lightning.predict",
        description="Classify texts with a checkpoint from `python train.py`.")
    parser.add_argument("checkpoint", help="a .ckpt file written by train.py")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", action="append", default=[],
                        help="texts from a file: .csv/.jsonl (see --text-column) or one per "
                             "line; '-' reads standard input. May be repeated.")
    parser.add_argument("--text-column", default="text", help="column of .csv/.jsonl files")
    parser.add_argument("--jsonl", action="store_true", help="JSON Lines instead of a table")
    parser.add_argument("--top-k", type=int, default=None,
                        help="with --jsonl: the k most probable classes' scores per text")
    parser.add_argument("--all-scores", action="store_true",
                        help="with --jsonl: every class's score per text")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if any)")
    parser.add_argument("--export", metavar="DIR",
                        help="write model.pt2 and text_encoder.json to DIR, then exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Intermixed: texts may come after options too (`--batch-size 8 "a text"`).
    args = argument_parser().parse_intermixed_args(argv)

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 1

    try:
        classifier = Predictor.from_checkpoint(args.checkpoint, args.device)
    except (FileNotFoundError, CheckpointError, ValueError) as error:
        return fail(str(error))
    if args.export:
        try:
            print(f"exported to {classifier.export(args.export)}")
        except ValueError as error:
            return fail(str(error))
        return 0

    texts = list(args.texts)
    try:
        for path in args.file:
            read, notes = read_texts(path, args.text_column)
            texts += read
            for note in notes:
                print(f"warning: {note}", file=sys.stderr)
    except (FileNotFoundError, ValueError) as error:
        return fail(str(error))
    if not texts:
        return fail("no texts given: pass texts, or --file PATH (or --file - for stdin)")

    try:
        predictions = classifier.predict(texts, args.batch_size, args.top_k, args.all_scores)
    except ValueError as error:  # the settings' checks are the API's
        return fail(str(error))
    if args.jsonl:
        for text, p in zip(texts, predictions, strict=True):
            record: dict[str, Any] = {"text": text, **asdict(p)}
            print(json.dumps({k: v for k, v in record.items() if v is not None}))
    else:
        print(prediction_table(texts, predictions, classifier.class_names))
    failed = sum(p.error is not None for p in predictions)
    if failed:
        print(f"warning: {failed} of {len(texts)} text(s) could not be classified",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
