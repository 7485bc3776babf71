"""Text -> ids (preprocessing.py): the vocabulary, Keras' padding sides, the normalisation,
punctuation as words, and golden ids that a checkpoint's tokenizer must keep giving."""

from __future__ import annotations

import pytest
import torch

from gru_lightning.preprocessing import PAD_ID, TextEncoder


def test_vocabulary_is_capped_at_max_features(tmp_path):
    texts = [" ".join(f"w{i}" for i in range(j, j + 40)) for j in range(40)]
    encoder = TextEncoder.fit(texts, max_features=20, maxlen=50)
    assert encoder.vocab_size == 20
    assert int(encoder.encode(texts).max()) < 20


@pytest.mark.parametrize(
    ("padding", "truncating", "short", "long"),
    [
        # Keras pad_sequences defaults: pad in front, keep the LAST maxlen tokens.
        ("pre", "pre", ["PAD", "PAD", "a", "b"], ["c", "d", "e", "f"]),
        ("post", "post", ["a", "b", "PAD", "PAD"], ["a", "b", "c", "d"]),
        ("pre", "post", ["PAD", "PAD", "a", "b"], ["a", "b", "c", "d"]),
    ],
)
def test_padding_and_truncation_sides(padding, truncating, short, long):
    encoder = TextEncoder.fit(["a b c d e f"] * 3, max_features=10, maxlen=4,
                              padding=padding, truncating=truncating)
    vocab = encoder.tokenizer.get_vocab()
    ids = encoder.encode(["a b", "a b c d e f"])

    def expect(words):
        return [PAD_ID if w == "PAD" else vocab[w] for w in words]

    assert ids.tolist() == [expect(short), expect(long)]


def test_text_is_normalised_like_the_keras_word_index():
    encoder = TextEncoder.fit(["it's a GREAT film.<br /><br />Great!"], max_features=20, maxlen=8)
    vocab = encoder.tokenizer.get_vocab()
    assert {"it's", "a", "great", "film"} <= set(vocab)
    assert not {"<br", "/>", ".", "!"} & set(vocab)


def test_punctuation_keeps_exclamation_and_question_marks_as_words():
    texts = ["Why?! Great film!!<br />Really?"]
    encoder = TextEncoder.fit(texts, max_features=20, maxlen=12, punctuation=True)
    tokens = encoder.tokenizer.encode(texts[0]).tokens
    assert [t for t in tokens if t != "[PAD]"] == ["why", "?", "!", "great", "film", "!", "!",
                                                     "really", "?"]
    # The tokenizer travels with the encoder: a checkpoint splits new text the same way.
    again = TextEncoder.from_dict(encoder.to_dict())
    assert torch.equal(again.encode(texts), encoder.encode(texts))


def test_punctuation_all_keeps_every_symbol_emoji_included_as_a_word():
    texts = ["Love it 😂😂 #blessed :) @user", "so sad :( #fail"]
    encoder = TextEncoder.fit(texts, max_features=40, maxlen=12, punctuation="all")
    tokens = [t for t in encoder.tokenizer.encode(texts[0]).tokens if t != "[PAD]"]
    assert tokens == ["love", "it", "😂", "😂", "#", "blessed", ":", ")", "@", "user"]
    assert not encoder.uses_kernel  # the compiled kernel splits at fixed marks only
    again = TextEncoder.from_dict(encoder.to_dict())
    assert torch.equal(again.encode(texts), encoder.encode(texts))
    # Words are split as before: the same vocabulary words as punctuation=False, plus marks.
    plain = TextEncoder.fit(texts, max_features=40, maxlen=12)
    assert set(plain.tokenizer.get_vocab()) < set(encoder.tokenizer.get_vocab())


def test_min_count_leaves_rare_words_out_of_the_vocabulary():
    texts = ["a a a b b c", "a b d"]
    # The compiled kernel's count (where it builds), and the tokenizers trainer's ("all").
    for punctuation in (False, "all"):
        encoder = TextEncoder.fit(texts, 50, 8, punctuation=punctuation, min_count=2)
        assert {"a", "b"} <= set(encoder.tokenizer.get_vocab())
        assert not {"c", "d"} & set(encoder.tokenizer.get_vocab())


GOLDEN_CORPUS = ["It's a GREAT film!<br /><br />Great, great acting... Really?",
                 "a dull, dull film; not great!", "Ünïcödé café: naïve film!?",
                 "the end. The END?"]
GOLDEN_TEXTS = ["Really? A great film... not dull!!", "café naïve, THE end"]


@pytest.mark.parametrize(("punctuation", "ids"), [
    (False, [[0, 0, 0, 0, 13, 4, 2, 3, 12, 5], [0, 0, 0, 0, 0, 0, 9, 11, 7, 6]]),
    (True, [[0, 15, 4, 6, 2, 5, 14, 7, 3, 3], [0, 0, 0, 0, 0, 0, 11, 13, 9, 8]]),
    ('!?.,;:"()-*/', [[8, 3, 6, 2, 2, 2, 18, 9, 4, 4], [0, 0, 0, 0, 0, 15, 17, 7, 11, 10]]),
])
def test_golden_ids(monkeypatch, punctuation, ids):
    """The ids release 0.1.0 gave these texts (its checkpoints and caches hold the same
    tokenizer): a change to the pipeline shows here first, with and without the kernel."""
    from gru_lightning import preprocessing

    encoder = TextEncoder.fit(GOLDEN_CORPUS, max_features=20, maxlen=10, punctuation=punctuation)
    assert encoder.encode(GOLDEN_TEXTS).tolist() == ids
    monkeypatch.setattr(preprocessing, "word_ids_kernel", lambda: None)
    again = TextEncoder.from_dict(encoder.to_dict())  # as a checkpoint rebuilds it
    assert not again.uses_kernel
    assert again.encode(GOLDEN_TEXTS).tolist() == ids
