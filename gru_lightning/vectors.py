"""`WordVectors`: the network's embedding initialised from word vectors (`vectors=word2vec`,
`vectors=file`), a stage of its own before training.

    python train.py data=lines data.dir=... vectors=word2vec             # trained on the texts
    python train.py ... vectors=word2vec vectors.unlabeled_file=more.txt  # and unlabeled ones
    python train.py ... vectors=file vectors.path=glove.6B.100d.txt model.net.embedding_dim=100

Trained vectors come from gensim's word2vec or fastText (gensim: the reference
implementation's algorithms, with progress per epoch) over the training texts, split into
words exactly as the vocabulary splits them, plus an optional file of unlabeled texts; they
are cached beside the tokenized data, keyed by everything that changes them. A vectors file
may be word2vec text (with its "count dim" header), GloVe (no header), fastText `.vec`, or
word2vec binary (`.bin`). Words without a vector keep the network's own initialisation. The
vectors travel in every checkpoint as the embedding's weights (`model.net.freeze_embedding`
keeps them as they are).
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gru_lightning.data import cache
from gru_lightning.data.base import DataError, file_signature
from gru_lightning.settings import positive_int
from gru_lightning.textfiles import read_texts

if TYPE_CHECKING:
    from gru_lightning.data.datamodule import TextDataModule

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the vectors of the same settings change
ALGORITHMS = ("word2vec", "fasttext")


class WordVectors:
    """Word vectors for the vocabulary: trained on the texts, or read from a file.

    Args:
        dim: the vectors' width: the network's `embedding_dim`.
        path: a vectors file to read (word2vec text or binary, GloVe, fastText .vec); None
            trains vectors on the training texts.
        unlabeled_file: more texts to train on (one per line, or .csv/.jsonl/.parquet with a
            `text` column); never the validation or test texts.
        algorithm: "word2vec" (skip-gram or CBOW over words) or "fasttext" (also sub-words:
            vectors for rare spellings from their character n-grams).
        skip_gram: skip-gram (better for rare words, slower) rather than CBOW.
        window: context words on each side.
        min_count: words seen fewer times get no trained vector.
        epochs: passes over the texts.
        workers: gensim's threads; 1 gives the same vectors on every run, more are faster.
        seed: seeds the vectors' initialisation and sampling.
    """

    def __init__(self, dim: int, path: str | None = None, unlabeled_file: str | None = None,
                 algorithm: str = "word2vec", skip_gram: bool = True, window: int = 5,
                 min_count: int = 2, epochs: int = 10, workers: int = 2, seed: int = 42) -> None:
        for name, value in (("dim", dim), ("window", window), ("min_count", min_count),
                            ("epochs", epochs), ("workers", workers)):
            positive_int(f"vectors.{name}", value)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"vectors.algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        for name, value in (("path", path), ("unlabeled_file", unlabeled_file)):
            if value is not None and not Path(value).expanduser().is_file():
                hint = ""
                if Path(value).parts[:1] == ("None",):  # interpolated from a null setting
                    hint = (" (it is made from a setting that is null, as data.local_path in "
                            f"experiment=gru_nbsvm_vectors: set that, or vectors.{name})")
                raise FileNotFoundError(f"vectors.{name}={value!r} does not exist{hint}")
        if (path is None or Path(path).suffix == ".bin") and \
                importlib.util.find_spec("gensim") is None:
            # Said now, not after the data is tokenized.
            needs = "vectors=word2vec trains" if path is None else f"{path} is read"
            raise ImportError(f"{needs} with gensim, which is not installed: pip install "
                              "'gru-lightning[vectors]' (or pip install gensim)")
        self.dim = dim
        self.path = Path(path).expanduser() if path else None
        self.unlabeled_file = Path(unlabeled_file).expanduser() if unlabeled_file else None
        self.algorithm = algorithm
        self.skip_gram = skip_gram
        self.window = window
        self.min_count = min_count
        self.epochs = epochs
        self.workers = workers
        self.seed = seed

    def describe(self) -> str:
        return f"vectors from {self.path}" if self.path else f"{self.algorithm} vectors"

    def settings(self) -> dict[str, Any]:
        return {"dim": self.dim, "algorithm": self.algorithm, "skip_gram": self.skip_gram,
                "window": self.window, "min_count": self.min_count, "epochs": self.epochs,
                "workers": self.workers, "seed": self.seed}

    # ---- the stage ------------------------------------------------------------------------

    def prepare(self, datamodule: TextDataModule) -> tuple[torch.Tensor, torch.Tensor]:
        """The vector of every vocabulary id `[vocab, dim]` and which ids have one `[vocab]`,
        read or trained (cached, keyed by the data's cache entry and these settings)."""
        vocab = datamodule.text_encoder.tokenizer.get_vocab()
        path = datamodule.derived_cache_path("vectors", {
            "format": FORMAT_VERSION, "file": file_signature([self.path]) if self.path else None,
            "unlabeled": file_signature([self.unlabeled_file]) if self.unlabeled_file else None,
            **({} if self.path else self.settings()), "dim": self.dim})

        def build() -> dict[str, torch.Tensor]:
            if self.path is not None:
                table, found = read_vectors(self.path, vocab, self.dim)
            else:
                texts: list[Sequence[str]] = [datamodule.split_texts()["train"]]  # on disk
                if self.unlabeled_file is not None:
                    texts.append(read_unlabeled(self.unlabeled_file))
                table, found = self.train(datamodule, texts, vocab)
            return {"table": table, "found": found}

        built = cache.load_or_build(path, build, "Word vectors")
        found = built["found"]
        log.info("Word vectors (%s): %d of the %d vocabulary words have one (%.0f%%)",
                 self.describe(), int(found.sum()), len(found), 100 * found.float().mean())
        return built["table"], found

    def train(self, datamodule: TextDataModule, texts: Sequence[Sequence[str]],
              vocab: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Vectors trained by gensim on the sequences of `texts`, read in turn, split into
        words as the vocabulary is."""
        try:
            from gensim.models import FastText, Word2Vec
            from gensim.models.callbacks import CallbackAny2Vec
        except ImportError:
            raise ImportError("vectors=word2vec trains with gensim: pip install "
                              "'gru-lightning[vectors]' (or pip install gensim)") from None
        logging.getLogger("gensim").setLevel(logging.WARNING)  # its own per-step chatter
        start = time.perf_counter()
        sentences = Sentences(datamodule.text_encoder.tokenizer, texts)
        log.info("Word vectors: training %s on %s texts, %d epochs", self.algorithm,
                 f"{sum(map(len, texts)):,}", self.epochs)

        class Progress(CallbackAny2Vec):
            def __init__(self) -> None:
                self.epoch = 0

            def on_epoch_end(self, model: Any) -> None:
                self.epoch += 1
                log.info("Word vectors: epoch %d of %d (%.1f s)", self.epoch, model.epochs,
                         time.perf_counter() - start)

        kind = Word2Vec if self.algorithm == "word2vec" else FastText
        model = kind(sentences, vector_size=self.dim, window=self.window,
                     min_count=self.min_count, sg=int(self.skip_gram), epochs=self.epochs,
                     workers=self.workers, seed=self.seed, hashfxn=_stable_hash,
                     callbacks=[Progress()])
        vectors = model.wv
        table = torch.zeros(len(vocab), self.dim)
        found = torch.zeros(len(vocab), dtype=torch.bool)
        for word, i in vocab.items():
            # fastText gives any word a vector from its character n-grams.
            if word in vectors.key_to_index or self.algorithm == "fasttext":
                table[i] = torch.from_numpy(vectors[word].copy())
                found[i] = True
        found[:2] = False  # padding and the unknown word keep their initialisation
        return table, found

    def initialise(self, network: nn.Module, table: torch.Tensor, found: torch.Tensor) -> None:
        """Copy the vectors into the rows of the network's `embedding` that have one."""
        embedding = getattr(network, "embedding", None)
        if not isinstance(embedding, nn.Embedding):
            raise ValueError(f"vectors= needs a network with an `embedding` (nn.Embedding); "
                             f"{type(network).__name__} has none")
        rows, dim = embedding.weight.shape
        if table.shape[1] != dim:
            raise ValueError(f"the vectors have {table.shape[1]} dimensions but the embedding "
                             f"{dim}: keep vectors.dim at ${{model.net.embedding_dim}}")
        if table.shape[0] > rows:
            raise ValueError(f"the vocabulary has {table.shape[0]} words but the embedding "
                             f"{rows} rows: keep model.net.vocab_size at ${{data.max_features}}")
        with torch.no_grad():
            ids = found.nonzero().flatten()
            embedding.weight[ids] = table[ids].to(embedding.weight)


def _stable_hash(text: str) -> int:
    # gensim seeds each word's initial vector with hashfxn(word + seed); Python's str hash
    # changes with every process, so the seed alone would not fix the vectors.
    return zlib.crc32(text.encode("utf-8"))


class Sentences:
    """The words of several sequences of texts, read in turn and split anew on every pass:
    gensim reads its corpus once for the vocabulary and once per epoch, and a million texts'
    words held at once would not fit (the training texts stay on disk)."""

    def __init__(self, tokenizer: Any, texts: Sequence[Iterable[str]]) -> None:
        self.tokenizer, self.texts = tokenizer, texts

    def __iter__(self) -> Iterator[list[str]]:
        return words_of(self.tokenizer, itertools.chain.from_iterable(self.texts))


def words_of(tokenizer: Any, texts: Iterable[str]) -> Iterator[list[str]]:
    """Each text's words as the vocabulary's tokenizer splits them (normalized, lowercased)."""
    normalize, split = tokenizer.normalizer.normalize_str, tokenizer.pre_tokenizer
    for text in texts:
        yield [word for word, _ in split.pre_tokenize_str(normalize(text))]


def read_unlabeled(path: Path) -> list[str]:
    """Texts of an unlabeled file: .parquet, .csv or .jsonl by a `text` column, else one per
    line."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "text" not in table.column_names:
            raise DataError(f"{path}: no column 'text' (columns: {table.column_names})")
        return [t for t in table.column("text").to_pylist() if t]
    texts, notes = read_texts(str(path))
    for note in notes:
        log.warning("%s", note)
    return [t for t in texts if t and t.strip()]


def read_vectors(path: Path, vocab: dict[str, int],
                 dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The vocabulary's vectors from a file: word2vec binary (`.bin`), or text with or
    without a "count dim" header (word2vec, fastText .vec, GloVe). Lookups try the word as
    it is, then lowercased (the vocabulary is lowercase). Errors name the file and line."""
    table = torch.zeros(len(vocab), dim)
    found = torch.zeros(len(vocab), dtype=torch.bool)
    if path.suffix == ".bin":
        return _read_binary(path, vocab, dim, table, found)
    seen = 0
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}:{number}: not UTF-8 ({error.reason} at byte "
                                f"{error.start}); save the vectors file as UTF-8") from None
            parts = line.rstrip(" ").split(" ")
            if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                if int(parts[1]) != dim:
                    raise DataError(f"{path}:1: the header says {parts[1]}-dimensional vectors"
                                    f" but the embedding has {dim}: set "
                                    f"model.net.embedding_dim={parts[1]}")
                continue  # word2vec / fastText header: count and dimension
            if not line.strip():
                continue
            if len(parts) < dim + 1 or (len(parts) > dim + 1 and _is_number(parts[-dim - 1])):
                raise DataError(f"{path}:{number}: {len(parts) - 1} values after the word, "
                                f"but the embedding has {dim}: set model.net.embedding_dim to"
                                f" the vectors' dimension")
            seen += 1
            # The values are the last `dim` fields: a few GloVe words hold spaces (". . .").
            word = " ".join(parts[:-dim])
            parts = [word, *parts[-dim:]]
            i = vocab.get(word, vocab.get(word.lower()))
            if i is None or i < 2 or (found[i] and word != word.lower()):
                continue  # the lowercase form wins over a capitalised one
            try:
                table[i] = torch.tensor([float(v) for v in parts[1:]])
            except ValueError:
                raise DataError(f"{path}:{number}: values that are not numbers after "
                                f"{word!r}") from None
            found[i] = True
    if not seen:
        raise DataError(f"{path}: holds no vectors (an empty file, or a header alone)")
    return table, found


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_binary(path: Path, vocab: dict[str, int], dim: int, table: torch.Tensor,
                 found: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from gensim.models import KeyedVectors
    except ImportError:
        raise ImportError("word2vec binary files are read with gensim: pip install "
                          "'gru-lightning[vectors]'") from None
    try:
        vectors = KeyedVectors.load_word2vec_format(str(path), binary=True)
    except (ValueError, EOFError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a word2vec binary file ({error})") from None
    if vectors.vector_size != dim:
        raise DataError(f"{path}: {vectors.vector_size}-dimensional vectors but the embedding "
                        f"has {dim}: set model.net.embedding_dim={vectors.vector_size}")
    if not len(vectors):
        raise DataError(f"{path}: holds no vectors")
    for word, i in vocab.items():
        key = word if word in vectors.key_to_index else None
        if key is not None and i >= 2:
            table[i] = torch.from_numpy(vectors[key].copy())
            found[i] = True
    return table, found
