"""TrimMemory: when it hands freed memory back (the process grew), and that it is harmless
without glibc."""

from __future__ import annotations

from pathlib import Path

import pytest

from gru_lightning.runtime import memory
from gru_lightning.runtime.memory import TrimMemory


def test_trims_every_n_steps_and_after_each_validation_where_rss_is_unknown(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: calls.append)
    monkeypatch.setattr(memory, "rss_mb", lambda: None)
    callback = TrimMemory(every_n_steps=10)
    for batch_idx in range(35):
        callback.on_train_batch_end(None, None, None, None, batch_idx)
    assert calls == [0, 0, 0]  # after steps 10, 20, 30; malloc_trim(0)
    for batch_idx in range(10):
        callback.on_validation_batch_end(None, None, None, None, batch_idx)
    callback.on_validation_end(None, None)
    assert len(calls) == 5


def test_trims_only_when_the_process_grew_since_the_last_trim(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: calls.append)
    # RSS read before each decision and after each trim.
    readings = iter([500, 450,   # first look: trim, down to 450
                     480,        # +30 MB: left alone
                     520, 460,   # +70 MB: trim
                     470])       # after validation: +10 MB, left alone
    monkeypatch.setattr(memory, "rss_mb", lambda: next(readings))
    callback = TrimMemory(every_n_steps=10, min_growth_mb=64)
    for batch_idx in range(30):
        callback.on_train_batch_end(None, None, None, None, batch_idx)
    callback.on_validation_end(None, None)
    assert calls == [0, 0]


def test_rss_is_this_process_s_resident_memory():
    # /proc/self/status says it in kB, rounded to pages the same way: within a page or two of
    # growth between the two readings.
    lines = Path("/proc/self/status").read_text().splitlines()
    status = dict(line.split(":", 1) for line in lines)
    assert memory.rss_mb() == pytest.approx(int(status["VmRSS"].split()[0]) / 1024, abs=1.0)


def test_a_c_library_without_malloc_trim_is_left_alone(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    callback = TrimMemory()
    callback.trim()  # nothing to call, no error
    callback.on_validation_end(None, None)


def test_the_real_malloc_trim_is_found_here():
    # glibc on the machines this project runs on; returns 1 when it released memory, else 0.
    trim = memory._malloc_trim()
    assert trim is not None and trim(0) in (0, 1)


def test_the_callback_pickles_for_ddp_spawn():
    import pickle

    callback = pickle.loads(pickle.dumps(TrimMemory(every_n_steps=7)))
    assert callback.every_n_steps == 7
    callback.trim()


def test_bad_interval_is_a_clear_error():
    with pytest.raises(ValueError, match="every_n_steps must be a positive integer"):
        TrimMemory(every_n_steps=0)
    with pytest.raises(ValueError, match="min_growth_mb must be >= 0"):
        TrimMemory(min_growth_mb=-1)
