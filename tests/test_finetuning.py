"""Fine-tuning a pre-trained network (finetuning.py): discriminative learning rates by layer
group, the warm-up and slanted schedule, gradual unfreezing from the top (a frozen embedding
stays frozen, a resumed run opens the same groups), and one clear message per bad setting."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from gru_lightning.data.batches import SliceBatchSampler, TensorBatchDataset, batch_as_is
from gru_lightning.finetuning import GradualUnfreezing, layer_groups, lr_factor, scheduler
from gru_lightning.model import TextClassifier
from gru_lightning.networks import RNN

NET = RNN(vocab_size=50, embedding_dim=8, hidden_size=8)
ADAM = functools.partial(torch.optim.Adam, lr=0.01)


def _loader(n: int = 64, batch_size: int = 8, repeated: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 50, (n, 12), generator=generator)
    labels = torch.randint(0, 2, (n,), generator=generator).float()
    if repeated:  # every batch the same texts
        ids, labels = ids[:batch_size].repeat(n // batch_size, 1), labels[:batch_size].repeat(
            n // batch_size)
    dataset = TensorBatchDataset(ids, labels)
    return DataLoader(dataset, batch_sampler=SliceBatchSampler(range(n), batch_size, False),
                      collate_fn=batch_as_is)


def _trainer(tmp_path, max_steps: int, every: float, **kwargs) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, callbacks=[GradualUnfreezing(every)],
                     default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, **kwargs)


def _changed(model: TextClassifier, before: dict[str, torch.Tensor]) -> set[str]:
    after = model.net.state_dict()
    return {name.split(".")[0] for name in before if not torch.equal(before[name], after[name])}


def test_the_schedule_warms_up_then_falls_as_ulmfits_slanted_triangle():
    # 100 steps, 10 of warm-up: lr/32 at the start, lr at step 10, back to lr/32 at the end.
    assert lr_factor(0, 100, "slanted", 0.1) == pytest.approx(1 / 32)
    assert lr_factor(5, 100, "slanted", 0.1) == pytest.approx((1 + 31 * 0.5) / 32)
    assert lr_factor(10, 100, "slanted", 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, "slanted", 0.1) == pytest.approx((1 + 31 * 0.5) / 32)
    assert lr_factor(100, 100, "slanted", 0.1) == pytest.approx(1 / 32)
    assert lr_factor(10, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 100, "cosine", 0.1) == pytest.approx(0.0)
    assert [lr_factor(s, 100, "constant", 0.1) for s in (10, 60, 100)] == [1.0, 1.0, 1.0]
    assert lr_factor(0, 100, "slanted", 0.0) == pytest.approx(1.0)  # no warm-up


def test_discriminative_learning_rates_divide_by_the_decay_per_group_down():
    model = TextClassifier(NET, 2, ADAM, lr_decay=2.0)
    optimizer = model.configure_optimizers()
    assert [group["lr"] for group in optimizer.param_groups] == [0.0025, 0.005, 0.01]
    grouped = [p for group in optimizer.param_groups for p in group["params"]]
    assert sorted(map(id, grouped)) == sorted(id(p) for p in model.parameters())
    assert [group["name"] for group in optimizer.param_groups] == ["embedding", "rnn", "head"]
    embedding, rnn, head = (group["params"] for group in optimizer.param_groups)
    assert embedding == [model.net.embedding.weight]
    assert rnn == list(model.net.rnn.parameters()) and head == list(model.net.head.parameters())
    # The defaults: the optimizer alone, one group as before the settings existed; cosine
    # without a warm-up is the CosineAnnealingLR that earlier runs resume with.
    optimizer = TextClassifier(NET, 2, ADAM).configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert not {"name", "lr_factor"} & set(optimizer.param_groups[0])
    assert isinstance(scheduler(optimizer, "cosine", 0.0, 10),
                      torch.optim.lr_scheduler.CosineAnnealingLR)


def test_the_scheduler_follows_the_factor_in_every_group(tmp_path):
    model = TextClassifier(NET, 2, ADAM, lr_schedule="slanted", warmup=0.25, lr_decay=2.0)
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            seen.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    L.Trainer(max_epochs=1, callbacks=[Record()], default_root_dir=tmp_path, logger=False,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
              ).fit(model, _loader())
    assert len(seen) == 8
    for step, lrs in enumerate(seen):
        factor = lr_factor(step, 8, "slanted", 0.25)
        assert lrs == pytest.approx([0.0025 * factor, 0.005 * factor, 0.01 * factor])


def test_gradual_unfreezing_opens_the_groups_from_the_top(tmp_path):
    # 8 steps an epoch, a group every half epoch: steps 0-3 the head alone, 4-7 the GRU too,
    # from 8 the embedding too.
    for steps, trained in ((4, {"head"}), (8, {"head", "rnn"}),
                           (10, {"head", "rnn", "embedding"})):
        torch.manual_seed(0)
        model = TextClassifier(NET, 2, ADAM)
        before = {k: v.clone() for k, v in model.net.state_dict().items()}
        _trainer(tmp_path, steps, 0.5).fit(model, _loader())
        assert _changed(model, before) == trained, steps
        assert all(p.requires_grad for p in model.parameters())  # as before the fit


def test_a_frozen_embedding_stays_frozen_when_its_group_opens(tmp_path):
    model = TextClassifier(RNN(vocab_size=50, embedding_dim=8, hidden_size=8,
                               freeze_embedding=True), 2, ADAM)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    _trainer(tmp_path, 16, 0.25).fit(model, _loader())
    assert _changed(model, before) == {"head", "rnn"}
    assert not model.net.embedding.weight.requires_grad


def test_a_resumed_run_opens_the_groups_an_uninterrupted_one_does(tmp_path):
    # 8 steps an epoch, a group every half epoch: resumed from the end of the first epoch
    # (the GRU open, the embedding about to), as from a run's last.ckpt. Every batch holds the
    # same texts: Lightning 2.6 resumes a checkpoint written at an epoch's end with one more
    # batch of that epoch, so the batches' order would differ.
    def fit(ckpt_path: str | None = None) -> TextClassifier:
        torch.manual_seed(0)
        model = TextClassifier(NET, 2, ADAM, lr_schedule="slanted", warmup=0.1, lr_decay=2.6)
        trainer = _trainer(tmp_path, 16, 0.5)
        trainer.callbacks.append(ModelCheckpoint(tmp_path / "checkpoints", "epoch{epoch}",
                                                 auto_insert_metric_name=False,
                                                 save_top_k=-1))
        trainer.fit(model, _loader(repeated=True), ckpt_path=ckpt_path)
        return model

    uninterrupted = fit()
    resumed = fit(str(tmp_path / "checkpoints" / "epoch0.ckpt"))
    for name, value in uninterrupted.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)


def test_the_layer_groups_of_a_network_without_embedding_or_rnn_are_one():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    assert {name: len(params) for name, params in layer_groups(net).items()} == {"head": 2}


@pytest.mark.parametrize(("settings", "message"), [
    ({"lr_schedule": "step"}, r"model\.lr_schedule must be one of constant, cosine, slanted"),
    ({"warmup": 1.0}, r"model\.warmup must be a share of the steps in \[0, 1\), got 1\.0"),
    ({"warmup": -0.1}, r"model\.warmup must be a share"),
    ({"lr_decay": 0}, r"model\.lr_decay must be a number > 0 \(1: one learning rate\), got 0"),
    ({"lr_decay": True}, r"model\.lr_decay must be a number > 0"),
])
def test_bad_fine_tuning_settings_are_one_clear_message_each(settings, message):
    with pytest.raises(ValueError, match=message):
        TextClassifier(NET, 2, ADAM, **settings)


@pytest.mark.parametrize("every", [0, -1, "1", None])
def test_bad_unfreezing_intervals_are_a_clear_message(every):
    with pytest.raises(ValueError, match=r"callbacks\.gradual_unfreezing\.every must be a "
                                         r"number of epochs > 0"):
        GradualUnfreezing(every)


def test_bad_gradual_unfreezing_on_several_devices_is_a_clear_message():
    several = SimpleNamespace(world_size=2)  # a DDP trainer's view, without starting one
    with pytest.raises(ValueError, match=r"trains on one device only; drop it "
                                         r"\(callbacks\.gradual_unfreezing=null\)"):
        GradualUnfreezing(1.0).on_train_start(several, TextClassifier(NET, 2, ADAM))


def test_a_schedule_without_a_known_length_is_a_clear_message():
    model = TextClassifier(NET, 2, ADAM, lr_schedule="slanted", warmup=0.1)
    model._trainer = SimpleNamespace(estimated_stepping_batches=float("inf"))  # max_epochs=-1
    with pytest.raises(ValueError, match=r"model\.lr_schedule=slanted with model\.warmup=0\.1 "
                                         r"needs a run of known length"):
        model.configure_optimizers()
