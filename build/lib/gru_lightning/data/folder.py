"""A folder per class of `.txt` files (`data=folder`), as Keras'
`text_dataset_from_directory` reads them."""

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


class FolderSource(TextSource):
    """A folder per class of `.txt` files, one text each, as Keras'
    `text_dataset_from_directory` reads them: `train_dir/<class>/*.txt`. The folder names
    are the class names (sorted).

    Args:
        train_dir: the training folder.
        test_dir: a test folder of the same layout; None holds out `test_size`.
        test_size: texts held out for testing (a count or a share) when there is no test_dir.
    """

    def __init__(self, train_dir: str | None = None, test_dir: str | None = None,
                 test_size: int | float | None = 0.2) -> None:
        self.dirs = {"train": train_dir, "test": test_dir}
        self.test_size = None if test_dir else optional_size("data.test_size", test_size)

    def _classes(self, split: str) -> dict[str, list[Path]]:
        name = self.dirs[split]
        if not name:
            raise DatasetUnavailableError("data=folder needs data.train_dir=PATH")
        root = Path(name).expanduser()
        if not root.is_dir():
            raise DatasetUnavailableError(f"data.{split}_dir={name!r} is not a folder")
        classes = {d.name: sorted(d.glob("*.txt")) for d in sorted(root.iterdir()) if d.is_dir()}
        classes = {name: files for name, files in classes.items() if files}
        if not classes:
            raise DatasetUnavailableError(
                f"data.{split}_dir={name!r} holds no class folders of .txt files "
                "(expected <dir>/<class>/*.txt)")
        return classes

    def setting(self) -> str:
        return f"data.train_dir={self.dirs['train']!r}"

    def signature(self) -> dict[str, Any]:
        return {split: {name: file_signature(files)
                        for name, files in self._classes(split).items()}
                for split, folder in self.dirs.items() if folder}

    def read(self) -> dict[str, Any]:
        datasets = import_datasets()
        train = self._classes("train")
        names = list(train)
        splits = {}
        for split, folder in self.dirs.items():
            if not folder:
                continue
            classes = train if split == "train" else self._classes(split)
            if unknown := sorted(set(classes) - set(names)):
                raise DataError(f"data.test_dir={folder!r}: class folder(s) {unknown} are not "
                                f"in data.train_dir (its classes: {names})")
            texts, labels = [], []
            for name, files in classes.items():
                for file in files:
                    texts.append(file.read_text(encoding="utf-8", errors="replace"))
                    labels.append(names.index(name))
            features = datasets.Features({"text": datasets.Value("string"),
                                          "label": datasets.ClassLabel(names=names)})
            splits[split] = datasets.Dataset.from_dict({"text": texts, "label": labels},
                                                       features=features)
        return splits
