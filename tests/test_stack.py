"""The n-gram model (ngrams/) and its stack on the network (stack.py, ngram=nbsvm):
features, the NB-weighted fit, the stacking weights, the cache, the stage through the entry
point, and predict on its checkpoint."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch

from gru_lightning.ngrams import NGramModel
from gru_lightning.predict import Predictor, main
from gru_lightning.stack import Stack, TextScores
from gru_lightning.stack_weights import fit_stacking, stacked_logits
from gru_lightning.train import train
from tests.conftest import compose_train_config, synthetic_reviews


def _fitted(texts: list[str], labels: list[int], **settings) -> NGramModel:
    return NGramModel(**{"buckets_log2": 12, **settings}).fit(texts, torch.tensor(labels))


def test_bags_are_the_distinct_hashed_ngrams_of_each_text():
    model = _fitted(["a b a b", "b c", "c"], [0, 1, 1], max_n=2)
    ids, offsets = model.featurizer.bags(["a b a b", "b c", "c", "zzz"])
    per_text = torch.tensor_split(ids, offsets[1:])
    # "a b a b": a, b, "a b", "b a" ("a b" twice counts once); "b c": b, c, "b c"; "c": c;
    # "zzz" is an unknown word, a feature of its own.
    assert [len(t) for t in per_text] == [4, 3, 1, 1]
    assert all(torch.equal(t, t.unique()) for t in per_text)  # sorted, no repeats
    assert per_text[0][0] != per_text[1][0] or per_text[0][1] != per_text[1][1]
    assert set(per_text[2].tolist()) <= set(per_text[1].tolist())  # "c" is in "b c"
    assert int(ids.max()) < 2**12
    # The same text gives the same ids alone or among others.
    alone, _ = model.featurizer.bags(["b c"])
    assert torch.equal(alone, per_text[1])


def test_word_order_reaches_the_model_through_bigrams():
    texts = ["not good", "good not"] * 20
    labels = [0, 1] * 20
    assert _fitted(texts, labels, max_n=2).logits(["not good", "good not"]).tolist()[0] < 0
    with_words_only = _fitted(texts, labels, max_n=1).logits(["not good", "good not"])
    assert torch.allclose(with_words_only[0], with_words_only[1])  # same bag of words


def test_fit_learns_synthetic_reviews_and_round_trips():
    train_rows, test_rows = synthetic_reviews(400, seed=0), synthetic_reviews(200, seed=1)
    model = _fitted([t for t, _ in train_rows], [y for _, y in train_rows])
    texts, labels = [t for t, _ in test_rows], torch.tensor([y for _, y in test_rows])
    logits = model.logits(texts)
    assert ((logits > 0).long() == labels).float().mean() >= 0.95
    again = NGramModel.from_dict(model.to_dict())
    assert torch.equal(again.logits(texts), logits)
    assert again.settings() == model.settings()


def test_the_fit_is_the_regularised_logistic_regression_optimum():
    """The streamed passes compute the objective's gradient: at the fitted weights the
    gradient of the same objective, written densely here, is zero."""
    rows = synthetic_reviews(300, seed=3)
    texts, labels = [t for t, _ in rows], torch.tensor([float(y) for _, y in rows])
    model = _fitted(texts, labels.long().tolist())
    ids, offsets = model.featurizer.bags(texts)
    design = torch.zeros(len(texts), 2**12, dtype=torch.float64)
    design[torch.repeat_interleave(torch.arange(len(texts)), torch.diff(
        offsets, append=torch.tensor([len(ids)]))), ids] = 1.0
    in_pos = design[labels == 1].sum(0) + 1
    in_neg = design[labels == 0].sum(0) + 1
    ratio = torch.log(in_pos / in_pos.sum()) - torch.log(in_neg / in_neg.sum())
    folded = model.weight.double()  # weight * ratio
    weight = torch.where(ratio != 0, folded / ratio, torch.zeros_like(folded))
    residual = torch.sigmoid(design @ folded + model.bias) - labels.double()
    # d/dw [sum log-loss(D (w * r) + b) + l2/2 |w|^2] = r * D'res + l2 w
    gradient = ratio * (design.T @ residual) + model.l2 * weight
    at_zero = ratio * (design.T @ (0.5 - labels.double()))
    assert gradient.abs().max() < 1e-5 * at_zero.abs().max()
    assert abs(residual.sum()) < 1e-3 and folded.abs().max() > 0.1  # not the trivial zero


def test_the_fit_spilled_to_disk_in_chunks_gives_the_same_model(monkeypatch, caplog):
    import gru_lightning.ngrams.featurizer as featurizer

    rows = synthetic_reviews(400, seed=0)
    texts, labels = [t for t, _ in rows], [y for _, y in rows]
    whole = _fitted(texts, labels)
    monkeypatch.setattr(featurizer, "FIT_CHUNK", 64)  # 7 chunks
    in_memory = _fitted(texts, labels)
    with caplog.at_level(logging.INFO, logger="gru_lightning.ngrams"):
        on_disk = _fitted(texts, labels, memory_mb=0)
    assert "in a temporary file, ngram.model.memory_mb=0" in caplog.text
    assert torch.equal(on_disk.weight, in_memory.weight) and on_disk.bias == in_memory.bias
    # Chunks change only the order of the sums.
    assert torch.allclose(in_memory.weight, whole.weight, atol=1e-4)
    assert torch.equal(
        on_disk.out_of_fold_logits(texts, torch.tensor(labels), folds=3),
        in_memory.out_of_fold_logits(texts, torch.tensor(labels), folds=3))
    with pytest.raises(ValueError, match=r"ngram\.model\.memory_mb must be an integer >= 0"):
        NGramModel(memory_mb=-1)


def test_a_masked_fit_is_the_fit_on_the_kept_texts(tmp_path):
    """Out-of-fold fits mask the held-out texts: the same model as a fit on the others."""
    rows = synthetic_reviews(300, seed=4)
    texts, labels = [t for t, _ in rows], torch.tensor([float(y) for _, y in rows])
    model = _fitted(texts, labels.long().tolist())
    keep = torch.arange(len(texts)) % 3 != 0
    kept_texts = [t for t, k in zip(texts, keep.tolist(), strict=True) if k]
    bags = model.featurizer.training_bags(texts, model.memory_mb, tmp_path)
    masked = model._fit(bags, labels, 2, keep=keep)
    alone = model._fit(model.featurizer.training_bags(kept_texts, model.memory_mb, tmp_path),
                       labels[keep], 2)
    assert torch.allclose(masked[0], alone[0], atol=1e-4)
    assert masked[1] == pytest.approx(alone[1], abs=1e-4)


def test_bad_settings_and_labels_are_clear_errors():
    with pytest.raises(ValueError, match=re.escape("ngram.model.max_n must be a positive "
                                                   "integer")):
        NGramModel(max_n=0)
    with pytest.raises(ValueError, match=re.escape("ngram.model.l2 must be positive")):
        NGramModel(l2=0.0)
    with pytest.raises(ValueError, match=r"max_vocab\*\*ngram.model.max_n must be < 2\*\*62"):
        NGramModel(max_n=4, max_vocab=10**6)
    with pytest.raises(ValueError, match=re.escape("labels 0 .. 1, each present")):
        NGramModel().fit(["a", "b"], torch.tensor([1, 1]))
    with pytest.raises(RuntimeError, match="not fitted"):
        NGramModel().logits(["a"])
    state = _fitted(["a", "b"], [0, 1]).to_dict()
    with pytest.raises(ValueError, match="n-gram model format 99"):
        NGramModel.from_dict({**state, "format_version": 99})


def test_punctuation_marks_are_words_of_their_own():
    model = _fitted(["not bad.", "not. bad"] * 10, [1, 0] * 10, max_n=2)
    assert model.logits(["not bad."]).item() > 0 > model.logits(["not. bad"]).item()
    with pytest.raises(ValueError, match="punctuation must be true, false or a string"):
        NGramModel(punctuation="ab")


def test_character_ngrams_are_features_of_their_own():
    texts, labels = ["great", "awful"] * 10, [1, 0] * 10
    model = _fitted(texts, labels, buckets_log2=20, max_n=1, char_ngrams=[2, 3])
    ids, offsets = model.featurizer.bags(["great", "ab"])
    # "ab" is an unknown word (one id) and " ab " has " a", "ab", "b " and " ab", "ab ".
    assert torch.diff(offsets, append=torch.tensor([len(ids)])).tolist()[1] == 1 + 3 + 2
    # Unseen words that share characters with seen ones are scored by them; words alone
    # give both the unknown word's score.
    assert model.logits(["greatt"]).item() > 0 > model.logits(["awfull"]).item()
    words_only = _fitted(texts, labels, buckets_log2=20, max_n=1)
    assert words_only.logits(["greatt"]).item() == words_only.logits(["awfull"]).item()
    # Case and runs of whitespace do not change a text's characters.
    bags = model.featurizer.bags
    assert torch.equal(bags(["Great  news"])[0], bags(["great news"])[0])
    again = NGramModel.from_dict(model.to_dict())
    assert again.settings()["char_ngrams"] == [2, 3]
    assert torch.equal(again.logits(["greatt", "ab"]), model.logits(["greatt", "ab"]))


def test_group_by_last_word_gives_each_group_its_own_weights():
    # "good" means 1 in group ga and 0 in group gb: words alone cannot fit it (an XOR).
    texts = ["good ga", "bad ga", "good gb", "bad gb"] * 10
    labels = [1, 0, 0, 1] * 10
    grouped = _fitted(texts, labels, buckets_log2=20, max_n=1, group_by_last_word=True)
    plain = _fitted(texts, labels, buckets_log2=20, max_n=1)
    unique = texts[:4]
    assert ((grouped.logits(unique) > 0).long() == torch.tensor(labels[:4])).all()
    assert plain.logits(unique).abs().max() < 0.1
    # good, ga, and both joined to the group ga.
    ids, _ = grouped.featurizer.bags(["good ga"])
    assert len(ids) == 4
    state = grouped.to_dict()
    assert NGramModel.from_dict(state).settings()["group_by_last_word"] is True
    # A model saved before these settings existed reads as words only, ungrouped.
    old = {**state, "settings": {k: v for k, v in state["settings"].items()
                                 if k not in ("char_ngrams", "group_by_last_word")}}
    assert NGramModel.from_dict(old).settings()["group_by_last_word"] is False
    assert NGramModel.from_dict(old).featurizer.char_ngrams is None


@pytest.mark.parametrize("value", [[3, 2], [0, 2], [2], "ab", [True, 2], [2, 9], 5])
def test_bad_character_ngram_settings_are_clear_errors(value):
    with pytest.raises(ValueError, match=re.escape("ngram.model.char_ngrams must be null or "
                                                   "[min, max] with 1 <= min <= max <= 8")):
        NGramModel(char_ngrams=value)


def test_group_by_last_word_must_be_a_boolean():
    with pytest.raises(ValueError, match=r"group_by_last_word must be true or false"):
        NGramModel(group_by_last_word=1)


def _features(logits: torch.Tensor, words: torch.Tensor) -> TextScores:
    return TextScores(logits[:, None], torch.log1p(words.float()))


def _first(scores: TextScores) -> TextScores:
    return TextScores(scores.logits[:1], scores.log_length[:1])


def test_stacking_weighs_the_better_logit_more():
    torch.manual_seed(0)
    labels = torch.randint(0, 2, (1000,)).float()
    signal = (labels * 2 - 1) * 2
    strong = signal + torch.randn(1000)
    weak = signal + 4 * torch.randn(1000)
    stacking = fit_stacking(weak, _features(strong, torch.full((1000,), 200)), labels)
    assert stacking["ngram"] > stacking["net"] > 0


def test_stacking_trusts_each_model_where_it_is_better():
    # The "network" is right on short texts, the "n-gram model" on long ones (as the GRU
    # reads the last maxlen words and the n-gram model all of them).
    torch.manual_seed(0)
    labels = torch.randint(0, 2, (2000,)).float()
    signal = (labels * 2 - 1) * 2
    words = torch.where(torch.arange(2000) % 2 == 0, 50, 1500)
    long = words > 100
    net = signal + torch.where(long, 6.0, 0.5) * torch.randn(2000)
    ngram = signal + torch.where(long, 0.5, 6.0) * torch.randn(2000)
    features = _features(ngram, words)
    stacking = fit_stacking(net, features, labels)
    assert stacking["ngram_by_length"] > 0 > stacking["net_by_length"]
    stacked = stacked_logits(stacking, net, features)
    plain = net + ngram
    accuracy = lambda z: ((z > 0).float() == labels).float().mean()  # noqa: E731
    assert accuracy(stacked) > accuracy(plain) + 0.05


def test_stacked_run_through_hydra_then_predict(compose_train, capsys):
    cfg = compose_train("ngram=nbsvm", "ngram.model.buckets_log2=14", "trainer.max_epochs=2")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    assert metrics["ngram/val_acc"] >= 0.9 and metrics["ngram/test_acc"] >= 0.9
    assert metrics["test/acc"] >= 0.9
    assert metrics["val/net_acc"] >= 0.9  # the network alone, beside the stack's val/acc
    assert json.loads((run / "metrics.json").read_text())["ngram/test_acc"] == pytest.approx(
        metrics["ngram/test_acc"])
    cached = list(Path(cfg.paths.cache_dir).glob("ngram-*.pt"))
    assert len(cached) == 1

    checkpoint = run / "checkpoints" / "last.ckpt"
    classifier = Predictor.from_checkpoint(checkpoint, "cpu")
    assert classifier.stack is not None and set(classifier.stack.weights) >= {
        "net", "ngram", "net_by_length", "ngram_by_length", "length", "bias"}
    reviews = ["great superb wonderful film", "awful boring terrible film"]
    assert [p.label for p in classifier.predict(reviews)] == ["pos", "neg"]
    # The stack, not the network alone: its probabilities are the stack of both logits.
    ids = classifier.encoder.encode(reviews)
    with torch.no_grad():
        net_logits = classifier.network(ids)
    expected = torch.sigmoid(stacked_logits(classifier.stack.weights, net_logits,
                                            classifier.stack.model.scores(reviews)))
    torch.testing.assert_close(classifier.predict_proba(reviews), expected)
    assert not torch.allclose(classifier.predict_proba(reviews), torch.sigmoid(net_logits))

    capsys.readouterr()  # what training printed
    assert main([str(checkpoint), "--jsonl", *reviews]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["label"] for line in lines] == ["pos", "neg"]
    assert main([str(checkpoint), "--export", str(run / "exported")]) == 1
    assert "n-gram model" in capsys.readouterr().err


def test_the_network_trains_on_top_of_out_of_fold_scores_with_ema(compose_train):
    # callbacks=ema deep-copies the model, n-gram model and its word encoder included.
    cfg = compose_train("ngram=nbsvm", "ngram.model.buckets_log2=14", "ngram.folds=3",
                        "callbacks=ema", "trainer.max_epochs=2")
    metrics = train(cfg)
    assert metrics["test/acc"] >= 0.9
    (cached,) = Path(cfg.paths.cache_dir).glob("ngram-*.pt")
    scores = torch.load(cached, weights_only=True)["train_logits"]
    assert scores.shape == (500,)  # 600 training reviews less 100 for validation
    checkpoint = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt",
                            weights_only=False)
    assert checkpoint["stack"]["folds"] == 3


def test_out_of_fold_scores_come_from_models_that_did_not_see_the_text():
    # Texts that are each their own class signal: a model that saw a text scores it with
    # confidence, one that did not has only the shared words to go by.
    texts = [f"common unique{i}" for i in range(40)]
    labels = torch.tensor([i % 2 for i in range(40)])
    model = _fitted(texts, labels.tolist(), max_n=1)
    in_sample = model.logits(texts)
    out_of_fold = model.out_of_fold_logits(texts, labels, folds=4)
    assert ((in_sample > 0).long() == labels).all()
    # Out of fold, no text's own word was seen: the scores carry no more than chance.
    assert ((out_of_fold > 0).long() == labels).float().mean() <= 0.6
    with pytest.raises(ValueError, match=re.escape("folds must be an integer >= 2")):
        model.out_of_fold_logits(texts, labels, folds=1)
    with pytest.raises(ValueError, match=re.escape("ngram.folds must be 0")):
        Stack(NGramModel(), folds=1)


def test_a_second_run_reads_the_ngram_model_from_the_cache(compose_train, tmp_path, caplog):
    first = train(compose_train("ngram=nbsvm", "ngram.model.buckets_log2=14"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gru_lightning.data.cache"):
        second = train(compose_train("ngram=nbsvm", "ngram.model.buckets_log2=14", "seed=3",
                                     f"paths.output_dir={tmp_path / 'again'}"))
    assert "Stacked model (NGramModel) found in cache" in caplog.text
    assert second["ngram/test_acc"] == first["ngram/test_acc"]


def test_a_damaged_ngram_cache_is_refitted(compose_train, tmp_path, caplog):
    first = train(compose_train("ngram=nbsvm", "ngram.model.buckets_log2=14"))
    (cached,) = Path(tmp_path / "cache").glob("ngram-*.pt")
    cached.write_bytes(b"not a checkpoint")
    again = train(compose_train("ngram=nbsvm", "ngram.model.buckets_log2=14",
                                f"paths.output_dir={tmp_path / 'again'}"))
    assert "is unreadable" in caplog.text
    assert again["ngram/test_acc"] == first["ngram/test_acc"]
    assert NGramModel.from_dict(torch.load(cached, weights_only=True)["model"]).weight is not None


def test_ngram_stage_refuses_validation_on_the_test_split(compose_train):
    with pytest.raises(ValueError, match=re.escape("set data.val_size > 0")):
        train(compose_train("ngram=nbsvm", "data.val_size=0"))


def _topics(n: int, seed: int) -> tuple[list[str], torch.Tensor]:
    from tests.source_data import TOPICS, topic_rows

    rows = topic_rows(n, seed)
    names = list(TOPICS)
    return [f"{t} {d}" for t, d, _ in rows], torch.tensor([names.index(y) for *_, y in rows])


def test_more_classes_fit_one_model_per_class_against_the_rest():
    texts, labels = _topics(300, 0)
    model = NGramModel(buckets_log2=12).fit(texts, labels, num_classes=3)
    assert model.weight.shape == (2**12, 3) and len(model.bias) == 3
    held_texts, held_labels = _topics(90, 1)
    logits = model.logits(held_texts)
    assert logits.shape == (90, 3)
    assert (logits.argmax(1) == held_labels).float().mean() >= 0.95
    # Each column is the binary model of its class against the rest, fitted alone.
    alone = NGramModel(buckets_log2=12).fit(texts, (labels == 1).long())
    torch.testing.assert_close(logits[:, 1], alone.logits(held_texts))
    again = NGramModel.from_dict(model.to_dict())
    assert torch.equal(again.logits(held_texts), logits)
    scores = model.scores(held_texts)  # three logits, and the log length
    assert scores.logits.shape == (90, 3) and scores.log_length.shape == (90,)
    scores = model.out_of_fold_logits(texts, labels, folds=3, num_classes=3)
    assert scores.shape == (300, 3) and (scores.argmax(1) == labels).float().mean() >= 0.9
    with pytest.raises(ValueError, match=re.escape("labels 0 .. 3, each present")):
        NGramModel(buckets_log2=12).fit(texts, labels, num_classes=4)


def test_stacking_of_more_classes_shares_the_four_weights_and_biases_each_class():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2000,), generator=generator)
    signal = torch.nn.functional.one_hot(labels, 3).float()
    net = signal + torch.randn(2000, 3, generator=generator)  # weak
    ngram = 4 * signal + torch.randn(2000, 3, generator=generator)  # strong
    features = TextScores(ngram, torch.full((2000,), 3.0))
    weights = fit_stacking(net, features, labels)
    assert len(weights["bias"]) == 3 and len(weights["length"]) == 3
    assert weights["ngram"] > weights["net"] > 0
    stacked = stacked_logits(weights, net, features)
    assert stacked.shape == (2000, 3)
    assert (stacked.argmax(1) == labels).float().mean() > (ngram.argmax(1) == labels).float(
        ).mean() - 0.01
    # Class weights move the biases towards the class they weigh up.
    weighted = fit_stacking(net, features, labels, class_weight=torch.tensor([1.0, 1.0, 5.0]))
    assert weighted["bias"][2] - weighted["bias"][0] > weights["bias"][2] - weights["bias"][0]


def test_ngram_stage_stacks_on_more_than_two_classes(tmp_path):
    from tests.source_data import topic_rows, write_table

    rows = [{"text": f"{t} {d}", "label": y} for t, d, y in topic_rows(300, 0)]
    csv = write_table(tmp_path / "topics.csv", rows)
    cfg = compose_train_config(tmp_path, None, "data=files", f"data.train_file={csv}",
                               "data.test_size=0.2", "data.val_size=0.1", "ngram=nbsvm",
                               "ngram.model.buckets_log2=14", "trainer.max_epochs=2",
                               "model.optimizer.lr=0.01")
    metrics = train(cfg)
    assert metrics["ngram/test_acc"] >= 0.9 and metrics["test/acc"] >= 0.9
    classifier = Predictor.from_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" /
                                           "last.ckpt")
    assert len(classifier.stack.weights["bias"]) == 3
    texts = ["the rocket reached orbit", "the striker scored a goal"]
    probs = classifier.predict_proba(texts)
    assert probs.shape == (2, 3)
    assert [p.label for p in classifier.predict(texts)] == ["space", "sport"]
    torch.testing.assert_close(probs.sum(1), torch.ones(2))


def test_cross_fitted_validation_scores_do_not_see_their_own_label():
    # A text's cross-fitted score comes from weights fitted without it: flipping its label
    # leaves its score as it was, where the in-sample stack's moves.
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (60,), generator=generator).float()
    net = (labels * 2 - 1) + 2 * torch.randn(60, generator=generator)
    features = _features((labels * 2 - 1) + 2 * torch.randn(60, generator=generator),
                         torch.randint(5, 60, (60,), generator=generator))
    stacked = Stack(NGramModel(), validation_folds=5)
    flipped = labels.clone()
    flipped[7] = 1 - flipped[7]
    cross_fitted = stacked.cross_fitted_logits(net, features, labels)
    assert cross_fitted[7] == stacked.cross_fitted_logits(net, features, flipped)[7]
    in_sample = stacked_logits(fit_stacking(net, features, labels), net, features)
    assert in_sample[7] != stacked_logits(fit_stacking(net, features, flipped), net,
                                          features)[7]
    # More classes: the same for a class id changed.
    classes = torch.randint(0, 3, (60,), generator=generator)
    net3 = torch.nn.functional.one_hot(classes, 3) + torch.randn(60, 3, generator=generator)
    features3 = TextScores(torch.randn(60, 3, generator=generator), features.log_length)
    moved = classes.clone()
    moved[7] = (moved[7] + 1) % 3
    torch.testing.assert_close(stacked.cross_fitted_logits(net3, features3, classes)[7],
                               stacked.cross_fitted_logits(net3, features3, moved)[7])
    with pytest.raises(ValueError, match=re.escape("ngram.validation_folds must be 0")):
        Stack(NGramModel(), validation_folds=1)
    with pytest.raises(ValueError, match="needs validation_folds >= 2 and as many texts"):
        stacked.cross_fitted_logits(net[:1], _first(features), labels[:1])
    # A validation split of one text is scored in sample: nothing to cross-fit on.
    logits, _, _ = stacked.fit_on_validation(
        {"logits": net[:1], **_first(features).columns(), "labels": labels[:1]},
        lambda rows: rows)
    torch.testing.assert_close(logits, stacked_logits(stacked.weights, net[:1],
                                                      _first(features)))


def test_cross_fitted_validation_metrics_through_hydra(compose_train):
    from hydra.utils import instantiate

    cfg = compose_train("ngram=nbsvm", "ngram.model.buckets_log2=14",
                        "ngram.validation_folds=3", "trainer.max_epochs=1")
    metrics = train(cfg)
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    classifier = Predictor.from_checkpoint(checkpoint, "cpu")
    assert classifier.stack.validation_folds == 3
    # The logged val/loss is the cross-fitted stack's: recomputed from the checkpoint (as
    # bench/tweeteval.py scores val), it is the same, and not the in-sample stack's.
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    texts = datamodule.split_texts()["val"]
    labels = datamodule.splits["val"].labels
    features = classifier.stack.model.scores(texts)
    with torch.no_grad():
        net_logits = classifier.network(classifier.encoder.encode(texts))
    loss = torch.nn.functional.binary_cross_entropy_with_logits
    cross_fitted = classifier.stack.cross_fitted_logits(net_logits, features, labels)
    assert loss(cross_fitted, labels).item() == pytest.approx(metrics["val/loss"], rel=1e-4)
    in_sample = loss(classifier.stack.text_logits(net_logits, texts), labels).item()
    assert in_sample != pytest.approx(metrics["val/loss"], rel=1e-2)


def test_character_ngrams_and_groups_through_hydra_then_predict(compose_train):
    cfg = compose_train("ngram=nbsvm", "ngram.model.buckets_log2=14",
                        "ngram.model.char_ngrams=[2,3]", "ngram.model.group_by_last_word=true",
                        "trainer.max_epochs=1")
    metrics = train(cfg)
    assert metrics["ngram/val_acc"] >= 0.9
    classifier = Predictor.from_checkpoint(
        Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", "cpu")
    model = classifier.stack.model
    assert (model.featurizer.char_ngrams, model.featurizer.group_by_last_word) == ((2, 3), True)
    texts = ["a wonderful, moving film", "dull and far too long"]
    torch.testing.assert_close(model.logits(texts),
                               NGramModel.from_dict(model.to_dict()).logits(texts))
    assert len(classifier.predict(texts)) == 2


def test_a_checkpoint_naming_no_scorer_is_one_message():
    from gru_lightning.stack import scorer_class

    assert scorer_class("gru_lightning.ngrams.model.NGramModel") is NGramModel
    with pytest.raises(ValueError, match=r"'os\.path\.join' is not a TextScorer"):
        scorer_class("os.path.join")
    with pytest.raises(ValueError, match=r"'no_such_package\.Scorer' cannot be imported"):
        scorer_class("no_such_package.Scorer")
