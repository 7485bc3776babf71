"""Settings chosen from the data (`auto`): the defaults of a user's own data (conf/data/_own.yaml),
where IMDB's fixed values (100 tokens, 10,000 words, 1,000 validation texts) do not fit.

Each choice is logged with the value chosen and the setting that overrides it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from gru_lightning.preprocessing import FIT_CHUNK, PAD_ID, Side, TextEncoder, in_batches

log = logging.getLogger(__name__)
AUTO = "auto"
VAL_SHARE, MAX_VAL = 0.1, 5000  # a tenth of the texts, at most 5,000 (IMDB's default is 1,000)
MIN_COUNT, MAX_VOCAB = 2, 50_000  # words seen once cannot be learned from one example
LENGTH_QUANTILE, MIN_LEN, MAX_LEN = 0.95, 8, 400  # 400: the CPU cost of a step grows with it


def is_auto(value: object) -> bool:
    return value == AUTO


def validation_size(n_train: int) -> int:
    """Texts held out for validation from `n_train`: a tenth, at most `MAX_VAL`, at least 1."""
    n_val = max(1, min(MAX_VAL, round(VAL_SHARE * n_train)))
    log.info("data.val_size=auto: %d of the %d training texts held out for validation "
             "(data.val_size=N or a share overrides)", n_val, n_train)
    return n_val


def fit_encoder(texts: Sequence[str], max_features: int | str, maxlen: int | str,
                padding: Side, truncating: Side, punctuation: bool) -> TextEncoder:
    """`TextEncoder.fit`, with `auto` for the vocabulary (the words seen `MIN_COUNT` times or
    more, at most `MAX_VOCAB`) and the padded length (the `LENGTH_QUANTILE` of the texts'
    word counts, rounded up to a multiple of 8, within [`MIN_LEN`, `MAX_LEN`])."""
    auto_vocab, auto_len = is_auto(max_features), is_auto(maxlen)
    encoder = TextEncoder.fit(texts, MAX_VOCAB if auto_vocab else max_features,
                              MAX_LEN if auto_len else maxlen, padding, truncating,
                              punctuation, min_count=MIN_COUNT if auto_vocab else 1)
    if auto_vocab:
        if encoder.vocab_size < 10:
            log.warning("data.max_features=auto: only %d words are seen %d times or more in "
                        "the training texts; set data.max_features=N to keep rarer ones",
                        encoder.vocab_size - 2, MIN_COUNT)
        log.info("data.max_features=auto: %d words seen at least %d times in the training "
                 "texts, with padding and the unknown word (at most %d; "
                 "data.max_features=N overrides)", encoder.vocab_size, MIN_COUNT, MAX_VOCAB)
    if not auto_len:
        return encoder
    counts = word_counts(encoder, texts)
    quantile = torch.quantile(counts.float(), LENGTH_QUANTILE).item() if len(counts) else 0
    chosen = int(min(MAX_LEN, max(MIN_LEN, 8 * -(-int(quantile) // 8))))
    log.info("data.maxlen=auto: %d tokens (%d%% of the training texts have at most %d words; "
             "the longest %d; data.maxlen=N overrides)", chosen, round(100 * LENGTH_QUANTILE),
             int(quantile), int(counts.max().item()) if len(counts) else 0)
    state = encoder.to_dict()
    state["maxlen"] = chosen
    return TextEncoder.from_dict(state)


def word_counts(encoder: TextEncoder, texts: Sequence[str]) -> torch.Tensor:
    """Each text's number of words, at most the encoder's `maxlen` (unknown words count)."""
    counts = [(encoder.encode(chunk) != PAD_ID).sum(1) for chunk in in_batches(texts, FIT_CHUNK)]
    return torch.cat(counts) if counts else torch.zeros(0, dtype=torch.long)
