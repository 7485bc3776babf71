"""The n-gram baseline alone: NB-weighted logistic regression over hashed word n-grams
(`gru_lightning.ngrams.NGramModel`, what `ngram=nbsvm` stacks on the GRU), fitted on the
training texts the GRU trains on, scored on the validation and test texts; with --stack,
also stacked on a trained GRU's logits as `ngram=nbsvm` does.

    python bench/ngram_baseline.py data.local_path=../shared/data/imdb experiment=best
    python bench/ngram_baseline.py data.local_path=../shared/data/imdb experiment=best \
        --stack outputs/<date>/<time>/checkpoints/epoch02-val_acc0.9160.ckpt

Any `train.py` override works (`ngram=nbsvm` is implied); give the GRU's experiment, so the
validation texts are the ones it was trained without. Each variant of VARIANTS is fitted in
turn on top of the overrides; the first is the config as given. --stack CKPT: the network of
that checkpoint (a GRU trained without an n-gram model) scores the validation and test
texts, and `fit_stacking` combines its logits with each variant's on the validation texts.
Prints a Markdown table (val and test accuracy, seconds) and writes it to
bench/results/ngram_baseline.{md,json}.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from gru_lightning import train as entry
from gru_lightning.predict import Predictor
from gru_lightning.stack_weights import fit_stacking, stacked_logits

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = [
    [],
    ["ngram.punctuation=true"],  # "!" and "?" the only marks read as words
    ["ngram.model.max_n=2"],
    ["ngram.model.buckets_log2=24"],
    ["ngram.model.l2=0.5"],
    ["ngram.model.l2=2.0"],
]


@torch.inference_mode()
def network_logits(checkpoint: str, texts: list[str]) -> torch.Tensor:
    """The checkpoint's network alone (no n-gram model), logits per text."""
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    if predictor.stack is not None:
        raise SystemExit(f"{checkpoint} already stacks an n-gram model: give a GRU's checkpoint")
    return torch.cat([predictor.network(predictor.encoder.encode(texts[i : i + 1024]))
                      for i in range(0, len(texts), 1024)])


def main(argv: list[str]) -> None:
    gru_checkpoint = argv[argv.index("--stack") + 1] if "--stack" in argv else None
    overrides = [a for a in argv if a not in ("--stack", gru_checkpoint)]
    rows = []
    gru: dict[str, torch.Tensor] = {}
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory() as output_dir:
        for variant in VARIANTS:
            cfg = entry.compose_config([
                f"paths.root_dir={cwd}", f"paths.output_dir={output_dir}",
                f"paths.cache_dir={cwd / '.cache'}", "ngram=nbsvm", *overrides, *variant])
            data = instantiate(cfg.data)
            data.prepare_data()
            data.setup("fit")
            texts = data.split_texts()
            model = instantiate(cfg.ngram.model)
            start = time.perf_counter()
            model.fit(texts["train"], data.splits["train"].labels)
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            accuracy = {}
            for split in ("val", "test"):
                logits = model.logits(texts[split])
                labels = data.splits[split].labels
                accuracy[split] = ((logits > 0).float() == labels).float().mean().item()
            score_s = time.perf_counter() - start
            stacked = {}
            if gru_checkpoint:
                labels = {split: data.splits[split].labels for split in ("val", "test")}
                gru = gru or {split: network_logits(gru_checkpoint, texts[split])
                              for split in labels}
                ngram = {split: model.scores(texts[split]) for split in labels}
                weights = fit_stacking(gru["val"], ngram["val"], labels["val"])
                for split in labels:
                    logits = stacked_logits(weights, gru[split], ngram[split])
                    stacked[f"stack_{split}_acc"] = ((logits > 0).float() == labels[split]
                                                     ).float().mean().item()
                    stacked[f"gru_{split}_acc"] = ((gru[split] > 0).float() == labels[split]
                                                   ).float().mean().item()
            ids, _ = model.featurizer.bags(texts["train"][:2000])
            rows.append({"variant": " ".join(variant) or "ngram=nbsvm", **model.settings(),
                         "val_acc": accuracy["val"], "test_acc": accuracy["test"],
                         "fit_s": fit_s, "score_s": score_s,
                         "val_test_texts": len(texts["val"]) + len(texts["test"]),
                         "ngrams_per_text": len(ids) / 2000, **stacked})
            print(rows[-1], flush=True)

    command = "python bench/ngram_baseline.py " + " ".join(argv)
    lines = [f"`{command}`", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
             f"{len(texts['train']):,} training texts, {len(texts['val']):,} validation, "
             f"{len(texts['test']):,} test", ""]
    if gru_checkpoint:
        lines += [f"The GRU alone ({gru_checkpoint}): val {rows[0]['gru_val_acc']:.4f}, test "
                  f"{rows[0]['gru_test_acc']:.4f}", ""]
    lines += ["| variant | val acc | test acc | stacked: val acc | stacked: test acc | "
              "fit s (vocabulary, features, L-BFGS) | scoring s (val + test) | "
              "distinct n-grams per text |",
              "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        stacked = (f"{row['stack_val_acc']:.4f} | {row['stack_test_acc']:.4f}" if gru_checkpoint
                   else "- | -")
        lines.append(f"| {row['variant']} | {row['val_acc']:.4f} | {row['test_acc']:.4f} | "
                     f"{stacked} | {row['fit_s']:.1f} | {row['score_s']:.1f} | "
                     f"{row['ngrams_per_text']:.0f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ngram_baseline.md").write_text(table)
    (RESULTS / "ngram_baseline.json").write_text(json.dumps(
        {"command": command, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
