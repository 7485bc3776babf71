"""Word vectors for the embedding (vectors.py, `vectors=word2vec|file`): files in every
format and their errors, vectors trained on the texts (seeded, cached), and the hand-over to
the network that travels in the checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from gru_lightning.data.base import DataError
from gru_lightning.data.datamodule import TextDataModule
from gru_lightning.data.lines import LinesSource
from gru_lightning.networks.rnn import RNN
from gru_lightning.predict import Predictor
from gru_lightning.train import train
from gru_lightning.vectors import Sentences, WordVectors, read_vectors, words_of
from tests.conftest import compose_train_config
from tests.source_data import tweeteval_folder

VOCAB = {"[PAD]": 0, "[UNK]": 1, "good": 2, "bad": 3, "film": 4}


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@pytest.mark.parametrize("header", [True, False], ids=["word2vec-header", "glove-no-header"])
def test_text_vectors_with_and_without_a_header(tmp_path, header):
    lines = ["Good 1 2 3", "bad -1 -2 -3", "unseen 9 9 9", "good 0.5 0.5 0.5"]
    path = _write(tmp_path / "v.txt", ("4 3\n" if header else "") + "\n".join(lines) + "\n")
    table, found = read_vectors(path, VOCAB, 3)
    assert found.tolist() == [False, False, True, True, False]
    # The lowercase form wins over a capitalised one, in either order.
    assert table[2].tolist() == [0.5, 0.5, 0.5] and table[3].tolist() == [-1, -2, -3]
    assert table[4].tolist() == [0, 0, 0]


def test_a_word_holding_spaces_takes_the_last_dim_fields_as_its_values(tmp_path):
    # GloVe's 840B vectors hold a few such words (". . .").
    path = _write(tmp_path / "v.txt", ". . . 1 2 3\ngood 4 5 6\n")
    table, found = read_vectors(path, {**VOCAB, ". . .": 5}, 3)
    assert table[5].tolist() == [1, 2, 3] and table[2].tolist() == [4, 5, 6]
    assert found.tolist() == [False, False, True, False, False, True]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "{path}: holds no vectors (an empty file, or a header alone)"),
    (b"2 3\n", "{path}: holds no vectors (an empty file, or a header alone)"),
    (b"2 5\ngood 1 2 3 4 5\n", "{path}:1: the header says 5-dimensional vectors but the "
                               "embedding has 3: set model.net.embedding_dim=5"),
    (b"good 1 2 3\nbad 1 2\n", "{path}:2: 2 values after the word, but the embedding has 3"),
    (b"good 1 2 3\n\xff\xfebad 1 2 3\n", "{path}:2: not UTF-8 (invalid start byte at byte 0)"),
    (b"good 1 2 x\n", "{path}:1: values that are not numbers after 'good'"),
])
def test_bad_vector_files_are_one_error_naming_the_file_and_line(tmp_path, content, message):
    path = _write(tmp_path / "v.vec", content)
    with pytest.raises(DataError, match=re.escape(message.format(path=path))):
        read_vectors(path, VOCAB, 3)


def test_word2vec_binary_vectors(tmp_path):
    from gensim.models import KeyedVectors

    vectors = KeyedVectors(3)
    vectors.add_vectors(["good", "film"], [[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    path = tmp_path / "v.bin"
    vectors.save_word2vec_format(str(path), binary=True)
    table, found = read_vectors(path, VOCAB, 3)
    assert found.tolist() == [False, False, True, False, True]
    assert table[4].tolist() == [0.0, 0.0, 2.0]
    with pytest.raises(DataError, match=re.escape("3-dimensional vectors but the embedding has "
                                                  "4: set model.net.embedding_dim=3")):
        read_vectors(path, VOCAB, 4)
    with pytest.raises(DataError, match="not a word2vec binary file"):
        read_vectors(_write(tmp_path / "bad.bin", b"garbage\n"), VOCAB, 3)


def test_settings_are_checked_when_made(tmp_path):
    with pytest.raises(ValueError, match=re.escape("vectors.epochs must be a positive integer")):
        WordVectors(16, epochs=0)
    with pytest.raises(ValueError, match=re.escape("vectors.algorithm must be one of")):
        WordVectors(16, algorithm="glove")
    missing = re.escape("vectors.path='nowhere.txt' does not exist")
    with pytest.raises(FileNotFoundError, match=missing):
        WordVectors(16, path="nowhere.txt")


def _datamodule(tmp_path: Path):
    folder = tweeteval_folder(tmp_path / "topics")
    dm = TextDataModule.from_settings(LinesSource, dir=str(folder), max_features=200, maxlen=16,
                                      cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    return dm


def test_trained_vectors_are_seeded_cached_and_learn_the_topics(tmp_path):
    dm = _datamodule(tmp_path)
    vectors = WordVectors(16, epochs=30, workers=1, window=3, min_count=1, seed=3)
    table, found = vectors.prepare(dm)
    vocab = dm.text_encoder.tokenizer.get_vocab()
    assert table.shape == (dm.text_encoder.vocab_size, 16)
    assert not found[0] and not found[1] and found[vocab["rocket"]]
    assert list(dm.cache_dir.glob("vectors-*.pt"))
    # Seeded: a fresh training (a new cache) gives the same vectors.
    again = WordVectors(16, epochs=30, workers=1, window=3, min_count=1, seed=3)
    dm.cache_dir = tmp_path / "other-cache"
    torch.testing.assert_close(again.prepare(dm)[0], table)
    # Words of one topic are nearer each other than words of two.
    unit = torch.nn.functional.normalize(table, dim=1)

    def similarity(a: str, b: str) -> float:
        return float(unit[vocab[a]] @ unit[vocab[b]])

    assert similarity("rocket", "orbit") > similarity("rocket", "stocks")


def test_vectors_train_from_the_texts_on_disk_as_from_a_list(tmp_path):
    """The training texts are streamed from the cache for each of gensim's passes (the
    vocabulary, then each epoch), the unlabeled ones after them: the vectors of a list."""
    dm = _datamodule(tmp_path)
    column = dm.split_texts()["train"]
    extra = ["rocket orbit launch", "stocks market bonds"]
    tokenizer = dm.text_encoder.tokenizer
    sentences = Sentences(tokenizer, [column, extra])
    assert list(sentences) == list(words_of(tokenizer, [*column, *extra]))
    assert list(sentences) == list(sentences)  # restartable, as gensim needs
    vocab = dm.text_encoder.tokenizer.get_vocab()
    vectors = WordVectors(16, epochs=5, workers=1, min_count=1, seed=3)
    streamed, found = vectors.train(dm, [column, extra], vocab)
    listed, found_listed = vectors.train(dm, [[*column, *extra]], vocab)
    torch.testing.assert_close(streamed, listed)
    assert torch.equal(found, found_listed)


def test_vectors_reach_the_embedding_frozen_and_travel_in_the_checkpoint(tmp_path):
    folder = tweeteval_folder(tmp_path / "topics")
    cfg = compose_train_config(tmp_path, None, "data=lines", f"data.dir={folder}",
                               "data.max_features=200", "data.maxlen=16", "vectors=word2vec",
                               "vectors.workers=1", "vectors.min_count=1",
                               "vectors.epochs=50", "model.net.freeze_embedding=true",
                               "trainer.max_epochs=4")
    metrics = train(cfg)
    # Frozen, the trained vectors alone carry the topics (chance: 1/3).
    assert metrics["test/acc"] >= 0.5
    table = torch.load(next((tmp_path / "cache").glob("vectors-*.pt")))["table"]
    network = Predictor.from_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" /
                                        "last.ckpt").network
    rows = torch.arange(2, table.shape[0])  # the vocabulary's words; 200 rows in all
    torch.testing.assert_close(network.embedding.weight[rows], table[rows])
    assert metrics["params"] < sum(p.numel() for p in network.parameters())  # frozen rows


def test_vectors_of_another_width_than_the_embedding_are_refused():
    network = RNN(vocab_size=5, embedding_dim=8, hidden_size=4).build(2)
    with pytest.raises(ValueError, match=re.escape("the vectors have 16 dimensions but the "
                                                   "embedding 8: keep vectors.dim at "
                                                   "${model.net.embedding_dim}")):
        WordVectors(16).initialise(network, torch.zeros(5, 16), torch.ones(5, dtype=torch.bool))
