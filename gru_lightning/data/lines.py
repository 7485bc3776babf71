"""Texts in one file and their labels in another, line by line (`data=lines`): the layout of
TweetEval and many benchmarks, with the class names from a mapping file (`0<TAB>anger`).

    python train.py data=lines data.dir=../shared/data/tweeteval/emotion
    python train.py data=lines data.train_texts=a.txt data.train_labels=a_labels.txt ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gru_lightning.data.base import (
    DataError,
    DatasetUnavailableError,
    TextSource,
    file_signature,
    import_datasets,
)
from gru_lightning.data.checks import optional_size
from gru_lightning.textfiles import read_lines

SPLITS = ("train", "val", "test")


class LinesSource(TextSource):
    """A text per line of one file, its label on the same line of another.

    Args:
        dir: a folder in TweetEval's layout: `{train,val,test}_text.txt`, the labels in
            `{split}_labels.txt`, and `mapping.txt` if there is one; the files named below
            take precedence.
        train_texts, train_labels, val_texts, val_labels, test_texts, test_labels: the files
            of each split; without a val split `data.val_size` is held out of train, without
            a test split `test_size`.
        mapping: a file of `<label><TAB><name>` lines naming the classes, in that order (the
            labels are those of its first column); None: the labels' own values, sorted.
        label_names: names for the classes in the order of their sorted label values (where
            there is no mapping file).
        test_size: texts held out for testing (a count or a share) without a test split.
    """

    def __init__(self, dir: str | None = None, train_texts: str | None = None,
                 train_labels: str | None = None, val_texts: str | None = None,
                 val_labels: str | None = None, test_texts: str | None = None,
                 test_labels: str | None = None, mapping: str | None = None,
                 label_names: list[str] | None = None,
                 test_size: int | float | None = 0.2) -> None:
        named = {"train": (train_texts, train_labels), "val": (val_texts, val_labels),
                 "test": (test_texts, test_labels)}
        folder = Path(dir).expanduser() if dir else None
        self.files: dict[str, tuple[Path, Path]] = {}
        for split, (texts, labels) in named.items():
            if folder is not None and texts is None and (folder / f"{split}_text.txt").exists():
                texts, labels = folder / f"{split}_text.txt", folder / f"{split}_labels.txt"
            if (texts is None) != (labels is None):
                raise ValueError(f"data.{split}_texts and data.{split}_labels go together: "
                                 f"give both or neither")
            if texts is not None:
                self.files[split] = (Path(texts).expanduser(), Path(labels).expanduser())
        if mapping is None and folder is not None and (folder / "mapping.txt").exists():
            mapping = str(folder / "mapping.txt")
        self.mapping = Path(mapping).expanduser() if mapping else None
        self.label_names = list(label_names) if label_names else None
        self.test_size = None if "test" in self.files else optional_size("data.test_size",
                                                                         test_size)
        self.dir = folder

    def setting(self) -> str:
        if "train" not in self.files:
            return f"data.dir={str(self.dir)!r}" if self.dir else "data=lines"
        return f"data.train_texts={str(self.files['train'][0])!r}"

    def _checked(self) -> dict[str, tuple[Path, Path]]:
        if "train" not in self.files:
            where = (f"data.dir={str(self.dir)!r} holds no train_text.txt" if self.dir
                     else "data=lines needs data.dir=FOLDER or data.train_texts and "
                          "data.train_labels")
            raise DatasetUnavailableError(where)
        for pair in self.files.values():
            for path in pair:
                if not path.is_file():
                    raise DatasetUnavailableError(f"{str(path)!r} does not exist")
        if self.mapping is not None and not self.mapping.is_file():
            raise DatasetUnavailableError(f"data.mapping={str(self.mapping)!r} does not exist")
        return self.files

    def signature(self) -> dict[str, Any]:
        files = self._checked()
        return {"lines": {split: file_signature(list(pair)) for split, pair in files.items()},
                "mapping": file_signature([self.mapping]) if self.mapping else None}

    def _classes(self) -> dict[str, str] | None:
        """The mapping file's labels and names, in its order."""
        if self.mapping is None:
            return None
        classes = {}
        for number, line in enumerate(read_lines(self.mapping), 1):
            if not line.strip():
                continue
            label, _, name = line.partition("\t")
            if not name.strip():
                raise DataError(f"{self.mapping}:{number}: expected <label><TAB><name>, got "
                                f"{line!r}")
            classes[label.strip()] = name.strip()
        if len(classes) < 2:
            raise DataError(f"{self.mapping}: names {len(classes)} class(es); a classifier "
                            "needs at least two")
        return classes

    def read(self) -> dict[str, Any]:
        datasets = import_datasets()
        classes = self._classes()
        splits = {}
        for split, (text_file, label_file) in self._checked().items():
            texts, labels = read_lines(text_file), [v.strip() for v in read_lines(label_file)]
            if len(texts) != len(labels):
                raise DataError(f"{str(label_file)!r} has {len(labels)} lines, but "
                                f"{str(text_file)!r} has {len(texts)}: one label per text")
            if classes is not None:
                unknown = [(n, v) for n, v in enumerate(labels, 1) if v not in classes]
                if unknown:
                    number, value = unknown[0]
                    raise DataError(f"{label_file}:{number}: label {value!r} is not in "
                                    f"{self.mapping} (its labels: {list(classes)}); "
                                    f"{len(unknown)} line(s) in all")
                index = {label: i for i, label in enumerate(classes)}
                features = datasets.Features({
                    "text": datasets.Value("string"),
                    "label": datasets.ClassLabel(names=list(classes.values()))})
                splits[split] = datasets.Dataset.from_dict(
                    {"text": texts, "label": [index[v] for v in labels]}, features=features)
            else:
                as_ints = all(v.lstrip("-").isdigit() for v in labels if v)
                values = [int(v) if as_ints and v else (v or None) for v in labels]
                splits[split] = datasets.Dataset.from_dict({"text": texts, "label": values})
        return splits
