"""Score a trained checkpoint on labelled data, without training.

    python -m gru_lightning.evaluate CKPT --file test.csv [--text-column text --label-column label]
    python -m gru_lightning.evaluate CKPT --texts test_text.txt --labels test_labels.txt
    python -m gru_lightning.evaluate CKPT --dir ../shared/data/tweeteval/emotion --split test
    python -m gru_lightning.evaluate CKPT --folder reviews/ --json report.json --png cm.png

The data is read by the trainer's own sources (data/: files, lines, folder), so any format
`python train.py` reads is read the same way here. Reported: accuracy, macro F1, per-class
precision, recall and F1, and the confusion matrix (a table; a PNG with --png).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from gru_lightning.checkpoints import CheckpointError
from gru_lightning.data.base import DataError, DatasetUnavailableError, TextSource
from gru_lightning.data.checks import kept_rows, split_columns
from gru_lightning.networks.base import predicted_classes
from gru_lightning.predict import Predictor
from gru_lightning.tables import evaluation_table


def source_of(args: argparse.Namespace) -> TextSource:
    """The data source the options name (exactly one of --file, --texts, --dir, --folder)."""
    from gru_lightning.data.files import FilesSource
    from gru_lightning.data.folder import FolderSource
    from gru_lightning.data.lines import LinesSource

    given = [name for name in ("file", "texts", "dir", "folder") if getattr(args, name)]
    if len(given) != 1:
        raise ValueError("give the labelled data once: --file, --texts with --labels, --dir or "
                         "--folder")
    if args.file:
        return FilesSource(train_file=args.file, file_format=args.file_format,
                           text_columns=args.text_column or ["text"],
                           label_column=args.label_column, test_size=None)
    if args.texts:
        if not args.labels:
            raise ValueError("--texts needs --labels: the file of one label per line")
        return LinesSource(train_texts=args.texts, train_labels=args.labels,
                           mapping=args.mapping, test_size=None)
    if args.dir:
        folder = Path(args.dir)
        mapping = args.mapping or (str(folder / "mapping.txt")
                                   if (folder / "mapping.txt").exists() else None)
        return LinesSource(train_texts=str(folder / f"{args.split}_text.txt"),
                           train_labels=str(folder / f"{args.split}_labels.txt"),
                           mapping=mapping, test_size=None)
    return FolderSource(train_dir=args.folder, test_size=None)


def labelled_texts(source: TextSource) -> tuple[list[str], list[Any], list[str] | None]:
    """The source's texts, raw labels and, where the data names its classes (a mapping file,
    class folders, a ClassLabel), those names. Blank texts are left out, as in training, and
    the log names their rows."""
    data = source.read()["train"]
    texts, labels = split_columns(data, source.text_columns, source.label_column, "labelled",
                                  source.setting())
    rows = kept_rows("labelled", texts, source.setting())
    names = getattr(data.features.get(source.label_column), "names", None)
    return [texts[i] for i in rows], [labels[i] for i in rows], names


def class_ids(labels: Sequence[Any], data_names: list[str] | None,
              class_names: Sequence[str], class_values: Sequence[str] | None = None
              ) -> torch.Tensor:
    """Each label as the index of the checkpoint's class: by the raw training label of each
    class where the checkpoint has them (`class_values`: labels 1-4 named World, ... by
    data.label_names), else by name (a label's own, or its class's in the data's names); an
    integer that names no class is a class id. Labels of no class are one error naming
    them."""
    index = {name: i for i, name in enumerate(class_names)}
    by_value = {value: i for i, value in enumerate(class_values or ())}
    ids, unknown, outside = [], {}, {}
    for value in labels:
        if data_names is not None and isinstance(value, int):
            if not 0 <= value < len(data_names):  # Python would read -1 as the last class
                outside[value] = outside.get(value, 0) + 1
                continue
            value = data_names[value]  # the data's own class name (mapping file, ClassLabel)
        elif str(value) in by_value:  # the raw label training saw
            ids.append(by_value[str(value)])
            continue
        if str(value) in index:
            ids.append(index[str(value)])
        elif (not by_value and isinstance(value, int) and not isinstance(value, bool)
              and 0 <= value < len(index)):
            ids.append(value)
        else:
            unknown[value] = unknown.get(value, 0) + 1
    if outside:
        hint = (" -1 marks a text without a label (as in the test split of many Hub data "
                "sets): evaluate on labelled texts." if -1 in outside else "")
        raise DataError(f"labels outside the data's {len(data_names)} classes (0 to "
                        f"{len(data_names) - 1}): {_counted(outside)}.{hint}")
    if unknown:
        raise DataError(f"labels unseen in training: {_counted(unknown)}; the checkpoint's "
                        f"classes are {', '.join(class_names)}")
    return torch.tensor(ids, dtype=torch.long)


def _counted(counts: dict[Any, int]) -> str:
    return ", ".join(f"{k!r} ({n} text{'s' * (n > 1)})" for k, n in counts.items())


def scored(classifier: Predictor, source: TextSource, batch_size: int = 1024,
           ) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The source's texts, their true class ids (`class_ids`), the classifier's predicted
    ids and its probabilities (`Predictor.predict_proba`)."""
    texts, labels, data_names = labelled_texts(source)
    truth = class_ids(labels, data_names, classifier.class_names, classifier.class_values)
    probs = classifier.predict_proba(texts, batch_size)
    return texts, truth, predicted_classes(probs), probs


def report(predicted: torch.Tensor, labels: torch.Tensor,
           class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix
    (rows: true class, columns: predicted)."""
    matrix = multiclass_confusion_matrix(predicted, labels, len(class_names))
    hits = matrix.diag().double()
    support, chosen = matrix.sum(1).double(), matrix.sum(0).double()
    precision = torch.where(chosen > 0, hits / chosen.clamp(min=1), 0.0)
    recall = torch.where(support > 0, hits / support.clamp(min=1), 0.0)
    f1 = torch.where(precision + recall > 0,
                     2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    return {
        "texts": len(labels),
        "accuracy": (hits.sum() / max(len(labels), 1)).item(),
        "macro_f1": f1.mean().item(),
        "classes": {name: {"precision": p, "recall": r, "f1": f, "support": int(n)}
                    for name, p, r, f, n in zip(class_names, precision.tolist(),
                                                recall.tolist(), f1.tolist(), support.tolist(),
                                                strict=True)},
        "confusion_matrix": matrix.tolist(),
    }


def plot_confusion_matrix(result: dict[str, Any], class_names: Sequence[str],
                          path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    matrix = torch.tensor(result["confusion_matrix"], dtype=torch.float64)
    shares = matrix / matrix.sum(1, keepdim=True).clamp(min=1)
    size = 2.5 + 0.45 * len(class_names)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(class_names)), class_names, rotation=90)
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if len(class_names) <= 12:  # counts stay legible
        for (row, column), value in zip(
                ((r, c) for r in range(len(class_names)) for c in range(len(class_names))),
                matrix.flatten().tolist(), strict=True):
            axes.text(column, row, f"{int(value)}", ha="center", va="center",
                      color="white" if shares[row, column] > 0.5 else "black", fontsize=8)
    figure.colorbar(image, ax=axes, label="share of the true class")
    axes.set_title(f"accuracy {result['accuracy']:.3f}, macro F1 {result['macro_f1']:.3f}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def output_problem(path: str) -> str | None:
    """Why a report cannot be written to `path` (its folder is made where missing), or None."""
    target = Path(path)
    if target.is_dir():
        return "is a folder; give a file name"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot make its folder ({error.strerror})"
    return None


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gru_lightning.evaluate",
        description="Score a checkpoint from `python train.py` on labelled data.")
    parser.add_argument("checkpoint", help="a .ckpt file written by train.py")
    parser.add_argument("--file", help="a CSV, TSV, JSON Lines or parquet file of texts and "
                                       "labels (as data=files reads it)")
    parser.add_argument("--file-format", default=None, help="csv, tsv, json or parquet "
                                                            "(default: from the extension)")
    parser.add_argument("--text-column", action="append", default=None,
                        help="text column of --file (default text; repeat to join several)")
    parser.add_argument("--label-column", default="label", help="label column of --file")
    parser.add_argument("--texts", help="one text per line (as data=lines reads it)")
    parser.add_argument("--labels", help="one label per line, beside --texts")
    parser.add_argument("--mapping", help="<label><TAB><name> lines naming the labels")
    parser.add_argument("--dir", help="a folder in TweetEval's layout (with --split)")
    parser.add_argument("--split", default="test", help="the split of --dir (default test)")
    parser.add_argument("--folder", help="a folder per class of .txt files (as data=folder)")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON ('-': "
                                                       "standard output, instead of the table)")
    parser.add_argument("--jsonl", action="store_true",
                        help="print each text's label, prediction and probability as JSON "
                             "Lines, then the report")
    parser.add_argument("--png", metavar="PATH", help="plot the confusion matrix to PATH")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if any)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 1

    # Checked before scoring, so no report is lost to a folder that is missing.
    for option, path in (("--json", args.json), ("--png", args.png)):
        if path in (None, "-"):  # not asked for, or standard output
            continue
        if problem := output_problem(path):
            return fail(f"{option} {path}: {problem}")
    try:
        source = source_of(args)
        classifier = Predictor.from_checkpoint(args.checkpoint, args.device)
        texts, truth, predicted, probs = scored(classifier, source, args.batch_size)
    except (FileNotFoundError, CheckpointError, DatasetUnavailableError, DataError,
            ValueError) as error:
        return fail(str(error))
    names = classifier.class_names
    # The probability of the predicted class, as predict's and the server's `score`.
    chance = (torch.where(predicted == 1, probs, 1 - probs) if classifier.binary
              else probs.max(1).values)
    result = report(predicted, truth, names)
    result["checkpoint"] = str(args.checkpoint)
    if args.jsonl:
        for text, true, guess, p in zip(texts, truth.tolist(), predicted.tolist(),
                                        chance.tolist(), strict=True):
            print(json.dumps({"text": text, "label": names[true], "predicted": names[guess],
                              "probability": p}))
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(evaluation_table(result, names))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
    if args.png:
        plot_confusion_matrix(result, names, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
