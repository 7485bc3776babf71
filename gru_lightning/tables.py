"""The commands' plain-text tables: predictions (predict) and an evaluation report
(evaluate), for a terminal; --jsonl / --json give the same figures to programs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gru_lightning.predict import Prediction


def prediction_table(texts: Sequence[str], predictions: list[Prediction],
                     class_names: Sequence[str]) -> str:
    """One line per text: its label, the label's probability and the text (cut at 60
    characters); an error or a warning at the end of its line."""
    width = max(5, *(len(n) for n in class_names))
    lines = [f"{'#':>5}  {'label':{width}}  {'P(label)':>8}  text"]
    for i, (text, p) in enumerate(zip(texts, predictions, strict=True)):
        shown = " ".join(str(text).split())
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        if p.error:
            lines.append(f"{i:>5}  {'-':{width}}  {'-':>8}  {shown}  [error: {p.error}]")
        else:
            flag = "  [warning: no known words]" if p.warning else ""
            lines.append(f"{i:>5}  {p.label:{width}}  {p.score:8.3f}  {shown}{flag}")
    return "\n".join(lines)


def evaluation_table(result: dict[str, Any], class_names: Sequence[str]) -> str:
    """`evaluate.report`'s figures: accuracy and macro F1, a line per class, and the
    confusion matrix."""
    width = max(9, *(len(n) for n in class_names))
    lines = [f"{result['texts']} texts: accuracy {result['accuracy']:.4f}, macro F1 "
             f"{result['macro_f1']:.4f}", "",
             f"{'class':{width}}  precision  recall      f1  support"]
    for name, row in result["classes"].items():
        lines.append(f"{name:{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
                     f"{row['f1']:6.4f}  {row['support']:7d}")
    cell = max(6, *(len(n) for n in class_names))
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              f"{'':{width}}  " + "  ".join(f"{n[:cell]:>{cell}}" for n in class_names)]
    for name, row in zip(class_names, result["confusion_matrix"], strict=True):
        lines.append(f"{name:{width}}  " + "  ".join(f"{v:>{cell}d}" for v in row))
    return "\n".join(lines)
