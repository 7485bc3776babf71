"""Texts from files, read alike wherever the project reads them: `predict --file`, the
line-by-line source (`data=lines`) and the word vectors' unlabeled file. UTF-8 with a
byte-order mark dropped and undecodable bytes replaced (and named); lines end at `\\n` or
`\\r\\n` only; a CSV cell may be of any length."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

CSV_FIELD_LIMIT = 2**31 - 1  # the largest the csv module takes on every platform (a C long)


def split_lines(text: str) -> list[str]:
    """Lines ended by \\n or \\r\\n only. `str.splitlines()` also splits at U+0085 (NEL),
    U+2028 and form feeds, which occur inside real texts (772 of IMDB's 25,000 test
    reviews hold a NEL): the outputs would no longer line up with the input lines."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_lines(path: Path) -> list[str]:
    """The file's lines (`split_lines`), undecodable bytes replaced."""
    return split_lines(path.read_text(encoding="utf-8-sig", errors="replace"))


def decode(raw: bytes, source: str, notes: list[str]) -> str:
    """UTF-8, with undecodable bytes replaced (U+FFFD) and the user told which lines; a
    byte-order mark (Windows editors write one) is not part of the first text."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    bad = []
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(str(number))
    shown = ", ".join(bad[:10]) + (", ..." if len(bad) > 10 else "")
    notes.append(f"{source}: line(s) {shown} are not valid UTF-8; decoded with replacement "
                 "characters (U+FFFD)")
    return raw.decode("utf-8-sig", errors="replace")


def read_texts(path: str, text_column: str = "text") -> tuple[list[str], list[str]]:
    """Texts from a file ("-" for standard input): `.csv` and `.jsonl` by `text_column`,
    anything else one text per line. Returns (texts, notes for the user)."""
    notes: list[str] = []
    if path == "-":
        raw, name = sys.stdin.buffer.read(), "<stdin>"
    else:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"text file {path!r} does not exist")
        raw, name = file.read_bytes(), path
    text = decode(raw, name, notes)
    if name.endswith(".csv"):
        # A review can be longer than the csv module's default cell limit (128 KiB).
        csv.field_size_limit(CSV_FIELD_LIMIT)
        rows = list(csv.DictReader(io.StringIO(text)))
        if rows and text_column not in rows[0]:
            raise ValueError(f"{name}: no text column {text_column!r} (columns: "
                             f"{list(rows[0])})")
        return [row[text_column] or "" for row in rows], notes
    if name.endswith(".jsonl"):
        texts = []
        for number, line in enumerate(split_lines(text), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                texts.append(record[text_column])
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                notes.append(f"{name}:{number}: skipped, not a JSON object with a "
                              f"{text_column!r} field ({type(error).__name__})")
        return texts, notes
    return split_lines(text), notes
