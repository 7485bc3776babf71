"""Data the source tests write: topic rows in any table format, TweetEval's line files, and
the small data-module settings they share."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import FILLER

TOPICS = {"sport": ["match", "goal", "league", "coach"],
          "money": ["market", "stocks", "bank", "profit"],
          "space": ["rocket", "orbit", "nasa", "launch"]}


def topic_rows(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(title, description, topic): the topic's words in either column, among filler."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = list(TOPICS)[i % 3]
        words = rng.choices(FILLER, k=rng.randint(6, 14)) + rng.choices(TOPICS[topic], k=2)
        rng.shuffle(words)
        rows.append((" ".join(words[:4]).title(), " ".join(words[4:]) + ".", topic))
    return rows


def write_table(path: Path, rows: list[dict]) -> Path:
    """rows as CSV, TSV, JSON Lines or parquet, by the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    if path.suffix == ".parquet":
        pq.write_table(pa.table({c: [r[c] for r in rows] for c in columns}), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import csv

        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, columns, delimiter="\t" if path.suffix == ".tsv"
                                    else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


def settings(tmp_path: Path, **kwargs) -> dict:
    return {"max_features": 100, "maxlen": 16, "val_size": 30, "cache_dir": str(tmp_path / "c"),
            **kwargs}


def lines_file(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def tweeteval_folder(root: Path) -> Path:
    """TweetEval's layout: {split}_text.txt, {split}_labels.txt, mapping.txt."""
    names = list(TOPICS)
    for split, (n, seed) in {"train": (240, 0), "val": (30, 1), "test": (60, 2)}.items():
        rows = topic_rows(n, seed)
        lines_file(root / f"{split}_text.txt", [f"{t} {d}" for t, d, _ in rows])
        lines_file(root / f"{split}_labels.txt", [str(names.index(y)) for _, _, y in rows])
    (root / "mapping.txt").write_text("0\tsport\n1\tmoney\n2\tspace")  # no final newline
    return root
