"""The paths a GPU run takes, exercised on the CPU: mixed precision (the recurrence stays in
float32 outside autocast, probabilities and the stack's logits in float32), no cross-device
indexing in the batch gather, the deferred non-finite check, DDP's one writer and its thread
share, the prediction command's device and batch options, and the benchmark configs."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gru_lightning.data.batches import TensorBatchDataset
from gru_lightning.networks import RNN
from gru_lightning.runtime.faults import DivergedError, StopOnNonFiniteLoss
from gru_lightning.train import train
from tests.conftest import ROOT


@pytest.mark.parametrize("overrides", [["model.net.fused_gru=true"], ["model.net.fused_gru=false"],
                                       ["ngram=nbsvm", "ngram.model.buckets_log2=12"]])
def test_bf16_mixed_trains_with_either_gru_and_the_stack(compose_train, overrides):
    metrics = train(compose_train("trainer.precision=bf16-mixed", "debug=fast_dev_run",
                                  *overrides))
    assert metrics["epochs"] == 1 and math.isfinite(metrics["test/loss"])
    assert metrics["classes"] == ["neg", "pos"]


@pytest.mark.parametrize("fused", [True, False])
def test_the_recurrence_runs_in_float32_outside_autocast(monkeypatch, fused):
    network = RNN(vocab_size=50, embedding_dim=8, hidden_size=8, fused_gru=fused).build(2)
    seen = {}
    recurrence = network._recurrence
    rnn_forward = network.rnn.forward_ids if fused else network.rnn.forward

    def spy_rnn(*args, **kwargs):
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return rnn_forward(*args, **kwargs)

    def spy(ids, embedded=None):
        outputs, state = recurrence(ids, embedded)
        seen["dtype"] = outputs.dtype
        return outputs, state

    monkeypatch.setattr(network.rnn, "forward_ids" if fused else "forward", spy_rnn)
    monkeypatch.setattr(network, "_recurrence", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = network(torch.randint(0, 50, (4, 12)))
    assert seen == {"autocast": False, "dtype": torch.float32}
    assert logits.dtype == torch.bfloat16  # the classifier's last layer is autocast's


def test_probabilities_and_the_stack_are_float32_whatever_the_logits():
    from gru_lightning.model import TextClassifier
    from gru_lightning.stack import TextScores
    from gru_lightning.stack_weights import fit_stacking, stacked_logits

    model = TextClassifier(RNN(vocab_size=10, embedding_dim=4, hidden_size=4), 2)
    logits = torch.tensor([0.004, -0.004, 3.0]).bfloat16()
    probabilities = model.probabilities(logits)
    assert probabilities.dtype == torch.float32
    assert probabilities[0] > 0.5 > probabilities[1]  # bf16's sigmoid gives 0.5 for both
    features = TextScores(torch.tensor([[1.0], [-1.0], [2.0], [-2.0]]),
                          torch.tensor([3.0, 4.0, 5.0, 3.5]))
    weights = fit_stacking(torch.tensor([1.0, -1.0, 2.0, -2.0]), features,
                           torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert stacked_logits(weights, torch.ones(4).bfloat16(), features).dtype == torch.float32


def test_the_stack_makes_its_weight_tensor_once(monkeypatch):
    from gru_lightning import stack as stack_module
    from gru_lightning.ngrams import NGramModel
    from gru_lightning.stack import Stack, TextScores

    made = []
    real = stack_module.weight_vector
    monkeypatch.setattr(stack_module, "weight_vector",
                        lambda *args: made.append(1) or real(*args))
    stacked = Stack(NGramModel())
    stacked.weights = {"net": 1.0, "ngram": 1.0, "net_by_length": 0.0, "ngram_by_length": 0.0,
                       "length": 0.0, "bias": 0.0, "length_mean": 5.0, "length_std": 1.0}
    for _ in range(3):  # three test batches
        stacked.eval_logits(torch.zeros(2), TextScores(torch.ones(2, 1), torch.ones(2)).columns())
    assert len(made) == 1


class CrossDeviceIndex(TorchDispatchMode):
    """Fails where a tensor is indexed with an index on another device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.index.Tensor:
            source, indices = args[0], args[1]
            for index in indices:
                if index is not None and index.device != source.device:
                    raise AssertionError(f"{source.device} tensor indexed from {index.device}")
        return func(*args, **(kwargs or {}))


def test_batches_are_gathered_with_an_index_on_the_splits_device():
    dataset = TensorBatchDataset(torch.zeros(10, 4, dtype=torch.int32, device="meta"),
                                 torch.zeros(10, device="meta"))
    with CrossDeviceIndex():
        batch = dataset.__getitems__(torch.arange(4))  # as SliceBatchSampler yields it
    assert batch["ids"].shape == (4, 4) and batch["ids"].device.type == "meta"


class OnAccelerator(torch.Tensor):
    """A CPU tensor that says it lives on a GPU: the callback's accelerator path."""

    @property
    def device(self) -> torch.device:
        return torch.device("cuda")


def test_a_nan_between_two_reads_on_an_accelerator_stops_before_the_checkpoints():
    callback = StopOnNonFiniteLoss(check_every_n_steps=50)
    trainer = SimpleNamespace(global_step=0, current_epoch=0, optimizers=[],
                              sanity_checking=False)
    for step in range(1, 61):  # read at step 50; the NaN comes at step 55
        trainer.global_step = step
        loss = torch.tensor(float("nan") if step == 55 else 0.5)
        callback.on_train_batch_end(trainer, None, torch.Tensor._make_subclass(
            OnAccelerator, loss), None, step)
    with pytest.raises(DivergedError, match="the training loss is nan"):
        callback.on_validation_start(trainer, None)  # before validation's checkpoints
    with pytest.raises(DivergedError):
        callback.on_train_epoch_end(trainer, None)  # before the epoch's end's


def test_under_ddp_one_process_writes_the_status(tmp_path, monkeypatch):
    from lightning.pytorch.utilities import rank_zero_only

    from gru_lightning.runtime.run_record import write_status

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    write_status(tmp_path, "running", {})
    assert not (tmp_path / "metrics.json").exists()
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    write_status(tmp_path, "running", {})
    assert (tmp_path / "metrics.json").exists()


def test_under_ddp_the_processes_share_the_cores_from_the_start():
    from gru_lightning.runtime.threads import CPUThreads

    previous = torch.get_num_threads()
    try:
        callback = CPUThreads("auto")
        callback.cores = 4
        callback.setup(SimpleNamespace(world_size=2, num_devices=2), None, "fit")
        assert torch.get_num_threads() == 2
        callback.setup(SimpleNamespace(world_size=1, num_devices=1), None, "fit")
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize(("options", "message"), [
    (["--batch-size", "0"], "batch_size must be a positive integer, got 0"),  # the API's check
    (["--device", "gpu0"], "device 'gpu0' is not a device torch knows"),
    (["--device", "cuda"], "device 'cuda': this torch sees no CUDA GPU"),
])
def test_prediction_options_are_one_clear_line(trained, capsys, options, message):
    from gru_lightning.predict import main

    if options[-1] == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert main([str(trained.last), *options, "a text"]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_folder_given_as_the_checkpoint_says_so(trained, capsys):
    from gru_lightning.predict import main

    assert main([str(trained.run), "a text"]) == 1
    assert "is a folder, not a checkpoint file" in capsys.readouterr().err


def test_the_benchmark_runs_on_the_cpu_and_gpu_check_without_a_progress_bar(tmp_path):
    from gru_lightning.train import compose_config

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from benchmark import bench_config
        from epoch_times import EpochTimes
        from gpu_check import train_overrides
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert bench_config(["data.local_path=x"], str(tmp_path)).trainer.accelerator == "cpu"
    cfg = compose_config([f"paths.root_dir={tmp_path}",
                          *train_overrides(tmp_path, "gpu", "fit1")])
    assert cfg.trainer.enable_progress_bar is False and cfg.callbacks.progress_bar is None
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "32-true"
    assert cfg.callbacks.epoch_times._target_ == "epoch_times.EpochTimes"
    assert Path(cfg.data.local_path) == Path(".data/imdb") and EpochTimes
