"""Tokens per second of a recurrent language model's training step on this CPU: the evidence
that sizes a pre-training stage (how many tokens of IMDB's 75k reviews fit in minutes).

The network is the classifier's (embedding 128 -> the project's fused GRU, hidden 64, or the
best config's sizes); the output layer is the variable: a full softmax over the vocabulary,
PyTorch's adaptive softmax (Grave et al. 2017), or a full softmax tied to the embedding
(through a projection of the state to the embedding's width); and the stage's own model
(`pretrain=lm`: adaptive softmax, cutoffs 2,000 / 8,000). Batches are IMDB's training
reviews as one token stream, `--batch` rows of `--bptt` tokens, the state carried across
batches (truncated back-propagation), Adam; the median of `--repeats` timed rounds of
`--steps` steps each, the variants alternating.

    python bench/lm_speed.py --imdb ../shared/data/imdb        # writes bench/results/lm_speed.*
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gru_lightning.networks.rnn import RNN
from gru_lightning.preprocessing import PAD_ID, TextEncoder
from gru_lightning.pretrain import LanguageModel as StageModel
from gru_lightning.pretrain import directions
from gru_lightning.runtime.fused_gru import FusedGRU


class LanguageModel(nn.Module):
    def __init__(self, vocab: int, dim: int, hidden: int, output: str) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.rnn = FusedGRU(dim, hidden, batch_first=True)
        self.output = output
        if output == "adaptive":
            cutoffs = [c for c in (2000, 10000) if c < vocab - 1]
            self.softmax = nn.AdaptiveLogSoftmaxWithLoss(hidden, vocab, cutoffs, div_value=4.0)
        elif output == "tied":
            self.projection = nn.Linear(hidden, dim)
            self.bias = nn.Parameter(torch.zeros(vocab))
        else:
            self.decoder = nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor, state: torch.Tensor | None):
        outputs, state = self.rnn.forward_ids(ids, self.embedding.weight, state)
        flat, wanted = outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)
        if self.output == "adaptive":
            loss = self.softmax(flat, wanted).loss
        elif self.output == "tied":
            loss = F.cross_entropy(self.projection(flat) @ self.embedding.weight.T + self.bias,
                                   wanted)
        else:
            loss = F.cross_entropy(self.decoder(flat), wanted)
        return loss, state.detach()


def token_stream(imdb: Path, vocab: int) -> torch.Tensor:
    """4,000 of IMDB's training reviews (their first 400 words) as one stream of ids, in a
    vocabulary of `vocab` ids fitted on all 25,000: real word frequencies, which the adaptive
    softmax's speed depends on."""
    import pyarrow.parquet as pq

    texts = [t for f in sorted(imdb.glob("train*.parquet"))
             for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]
    encoder = TextEncoder.fit(texts, vocab, 400, padding="post", truncating="post")
    ids = encoder.encode(texts[:4000]).long()
    return ids[ids != PAD_ID]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imdb", type=Path, default=Path("../shared/data/imdb"))
    parser.add_argument("--vocab", type=int, nargs="+", default=[10000, 50000])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/lm_speed"))
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for vocab in args.vocab:
        stream = token_stream(args.imdb, vocab)
        width = len(stream) // args.batch
        batches = stream[: width * args.batch].view(args.batch, width)
        models = {name: LanguageModel(vocab, 128, 64, name)
                  for name in ("full", "adaptive", "tied")}
        # The stage itself (gru_lightning/pretrain.py, pretrain=lm) on the same network.
        (embedding, rnn), _ = directions(RNN(vocab_size=vocab).build(2))
        models["pretrain=lm"] = StageModel(embedding, rnn, [c for c in (2000, 8000)
                                                            if c < vocab - 1])
        optimizers = {name: torch.optim.Adam(m.parameters(), 1e-3) for name, m in models.items()}
        timings: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.repeats):
            for name, model in models.items():  # alternating
                state, start, position = None, time.perf_counter(), 0
                for _ in range(args.steps):
                    chunk = batches[:, position : position + args.bptt + 1]
                    position += args.bptt
                    loss, state = model(chunk[:, :-1], chunk[:, 1:], state)
                    optimizers[name].zero_grad()
                    loss.backward()
                    optimizers[name].step()
                timings[name].append(time.perf_counter() - start)
        for name, seconds in timings.items():
            tokens = args.steps * args.batch * args.bptt
            rows.append({"vocab": vocab, "output": name, "tokens_per_s":
                         round(tokens / statistics.median(seconds)), "rounds_s": seconds})
            print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = ["| vocabulary | output layer | tokens/s (median) |", "|---|---|---|"]
    lines += [f"| {r['vocab']:,} | {r['output']} | {r['tokens_per_s']:,} |" for r in rows]
    args.out.with_suffix(".md").write_text(
        f"`python bench/lm_speed.py` ({torch.get_num_threads()} threads, batch {args.batch} x "
        f"bptt {args.bptt}, {args.steps} steps x {args.repeats} alternating rounds)\n\n"
        + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
