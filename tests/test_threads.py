"""CPUThreads: PyTorch's CPU threads follow the cores other processes leave free."""

from __future__ import annotations

import pytest
import torch

from gru_lightning.runtime import threads
from gru_lightning.runtime.threads import CPUThreads


class FakeMachine:
    """A clock, the machine's busy CPU seconds and this process's, moved by the test."""

    def __init__(self) -> None:
        self.wall = self.busy = self.own = 0.0

    def advance(self, seconds: float, own_cores: float, other_cores: float) -> None:
        self.wall += seconds
        self.own += seconds * own_cores
        self.busy += seconds * (own_cores + other_cores)


@pytest.fixture
def machine(monkeypatch) -> FakeMachine:
    fake = FakeMachine()
    monkeypatch.setattr(threads, "busy_seconds", lambda cores: fake.busy)
    monkeypatch.setattr(threads, "own_cpu_seconds", lambda: fake.own)
    monkeypatch.setattr(threads.time, "monotonic", lambda: fake.wall)
    previous = torch.get_num_threads()
    yield fake
    torch.set_num_threads(previous)


def make(machine: FakeMachine, cores: int = 4) -> CPUThreads:
    callback = CPUThreads("auto", interval_s=0.25)
    callback.cores = cores
    callback.setup(None, None, "fit")
    return callback


def test_auto_gives_up_the_cores_another_process_uses_and_takes_them_back(machine):
    callback = make(machine)
    assert torch.get_num_threads() == 4
    for _ in range(2):  # two measurements in a row must agree
        machine.advance(0.3, own_cores=3.0, other_cores=1.0)
        callback.on_train_batch_end()
    assert torch.get_num_threads() == 3
    for _ in range(2):  # a second training beside this one: two cores each
        machine.advance(0.3, own_cores=2.0, other_cores=2.0)
        callback.on_validation_batch_end()
    assert torch.get_num_threads() == 2
    for _ in range(2):  # alone again
        machine.advance(0.3, own_cores=2.0, other_cores=0.0)
        callback.on_test_batch_end()
    assert torch.get_num_threads() == 4


def test_one_busy_moment_does_not_flip_the_thread_count(machine):
    callback = make(machine)
    machine.advance(0.3, own_cores=1.0, other_cores=3.0)
    callback.on_train_batch_end()
    for _ in range(3):
        machine.advance(0.3, own_cores=4.0, other_cores=0.0)
        callback.on_train_batch_end()
    assert torch.get_num_threads() == 4


def test_never_fewer_than_one_thread_and_measures_only_every_interval(machine):
    callback = make(machine, cores=2)
    machine.advance(0.1, own_cores=2.0, other_cores=5.0)
    callback.on_train_batch_end()  # too soon: not measured
    machine.advance(0.3, own_cores=1.0, other_cores=5.0)
    callback.on_train_batch_end()  # the first measurement: one alone changes nothing
    assert torch.get_num_threads() == 2
    machine.advance(0.3, own_cores=1.0, other_cores=5.0)
    callback.on_train_batch_end()  # the second agrees: one thread, not fewer
    assert torch.get_num_threads() == 1


def test_a_fixed_count_and_null(machine):
    CPUThreads(1).setup(None, None, "fit")
    assert torch.get_num_threads() == 1
    torch.set_num_threads(3)
    CPUThreads(None).setup(None, None, "fit")  # PyTorch's default, untouched
    assert torch.get_num_threads() == 3


@pytest.mark.parametrize("value", [0, -1, "two", True, 1.5])
def test_bad_values_are_rejected(value):
    with pytest.raises(ValueError, match="num_threads must be 'auto', a positive integer"):
        CPUThreads(value)


def test_busy_seconds_reads_this_machine():
    busy = threads.busy_seconds({0})
    if busy is None:
        pytest.skip("no /proc/stat on this system")
    assert busy > 0
