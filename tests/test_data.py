"""The data module over IMDB's source: splits, hold-outs, vocabulary, cache, batches, and
each bad input as one clear error with nothing lost."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

from gru_lightning.data import DataError, DatasetUnavailableError, TextDataModule
from gru_lightning.data.batches import SliceBatchSampler
from gru_lightning.data.imdb import IMDBSource
from gru_lightning.data.store import CHUNK, TextColumn, TextWriter
from gru_lightning.preprocessing import UNK_ID, in_batches
from tests.conftest import cache_entries, synthetic_reviews, write_parquet_copy


def mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose memory map holds the tensor's data (Linux' /proc/self/maps), if any."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in parts[0].split("-"))
        if low <= address < high:
            return parts[5].strip() if len(parts) > 5 else None
    return None


def make_datamodule(tmp_path: Path, local_path: Path | str | None, **kwargs) -> TextDataModule:
    kwargs = {"max_features": 50, "maxlen": 16, "val_size": 100, **kwargs}
    return TextDataModule.from_settings(
        IMDBSource, local_path=str(local_path) if local_path else None,
        cache_dir=str(tmp_path / "cache"), **kwargs)


def test_splits_sizes_and_id_range(tmp_path, parquet_copy):
    dm = make_datamodule(tmp_path, parquet_copy)
    dm.prepare_data()
    dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [500, 100, 200]
    for split in dm.splits.values():
        assert split.ids.shape[1] == 16
        assert int(split.ids.max()) < 50 and int(split.ids.min()) >= 0
    batch = next(iter(dm.train_dataloader()))
    assert batch["ids"].shape == (64, 16) and batch["labels"].dtype == torch.float32
    # The hold-out is a seeded random subset (IMDB's train split is sorted by label): both
    # labels, the same texts for the same split_seed, others for another.
    assert 0.3 < dm.splits["val"].labels.mean() < 0.7
    same = make_datamodule(tmp_path / "same", parquet_copy)
    same.setup("fit")
    other = make_datamodule(tmp_path / "other", parquet_copy, split_seed=1)
    other.setup("fit")
    assert torch.equal(same.splits["val"].ids, dm.splits["val"].ids)
    assert list(same.split_texts()["val"]) == list(dm.split_texts()["val"])
    assert set(other.split_texts()["val"]) != set(dm.split_texts()["val"])


def test_the_validation_texts_are_kept_out_of_the_vocabulary(tmp_path):
    # Each training text has a word of its own: those of the held-out texts are unknown.
    train = [(f"common only{i}", i % 2) for i in range(200)]
    copy = write_parquet_copy(tmp_path / "copy", {"train": train, "test": train[:10]})
    dm = make_datamodule(tmp_path, copy, val_size=50, max_features=1000)
    dm.setup("fit")
    vocab = dm.text_encoder.tokenizer.get_vocab()
    texts = dm.split_texts()
    assert all(text.split()[1] in vocab for text in texts["train"])
    assert not any(text.split()[1] in vocab for text in texts["val"])
    assert (dm.splits["val"].ids[:, -1] == UNK_ID).all()

def test_val_size_zero_validates_on_test(tmp_path, parquet_copy):
    dm = make_datamodule(tmp_path, parquet_copy, val_size=0)
    dm.setup("fit")
    assert len(dm.splits["train"]) == 600
    assert dm.splits["val"] is dm.splits["test"]


def test_val_size_fraction(tmp_path, parquet_copy):
    dm = make_datamodule(tmp_path, parquet_copy, val_size=0.25)
    dm.setup("fit")
    assert len(dm.splits["val"]) == 150


def test_vocabulary_is_built_from_training_reviews_only(tmp_path):
    train = [("alpha beta gamma", 1), ("alpha beta delta", 0)] * 10
    test = [("zeta alpha", 1), ("zeta beta", 0)]
    copy = write_parquet_copy(tmp_path / "copy", {"train": train, "test": test})
    dm = make_datamodule(tmp_path, copy, val_size=0)
    dm.setup("fit")
    vocab = dm.text_encoder.tokenizer.get_vocab()
    assert "alpha" in vocab and "zeta" not in vocab
    assert dm.splits["test"].ids[0, -2].item() == UNK_ID  # "zeta" is out of vocabulary


def test_second_run_hits_the_cache_and_says_so(tmp_path, parquet_copy, caplog):
    first = make_datamodule(tmp_path, parquet_copy)
    first.prepare_data()
    assert first.cache_hit is False
    first.setup("fit")
    second = make_datamodule(tmp_path, parquet_copy)
    with caplog.at_level(logging.INFO, logger="gru_lightning.data.datamodule"):
        second.prepare_data()
    assert second.cache_hit is True
    assert "skipping tokenization" in caplog.text
    second.setup("fit")
    assert torch.equal(first.splits["train"].ids, second.splits["train"].ids)


def test_cache_key_changes_with_every_setting_that_changes_the_tensors(tmp_path, parquet_copy):
    base = make_datamodule(tmp_path, parquet_copy).cache_path()
    for change in ({"maxlen": 17}, {"max_features": 51}, {"padding": "post"},
                   {"truncating": "post"}, {"punctuation": True}, {"val_size": 50},
                   {"split_seed": 1}):
        assert make_datamodule(tmp_path, parquet_copy, **change).cache_path() != base, change
    # ... but not with the loader-only settings.
    assert make_datamodule(tmp_path, parquet_copy, batch_size=8).cache_path() == base


def test_all_local_formats_give_the_same_tensors(tmp_path, parquet_copy, acl_copy, acl_tarball):
    results = []
    for source in (parquet_copy, acl_copy, acl_copy.parent, acl_tarball):
        dm = make_datamodule(tmp_path / source.name, source, val_size=0)
        dm.setup("fit")
        # The Stanford layout lists neg then pos: compare as sorted (ids, label) rows.
        rows = {split: sorted(zip(map(tuple, ds.ids.tolist()), ds.labels.tolist(), strict=True))
                for split, ds in dm.splits.items() if split != "val"}
        results.append(rows)
    assert all(r == results[0] for r in results[1:])


def test_wrong_local_path_is_a_clear_error(tmp_path):
    dm = make_datamodule(tmp_path, tmp_path / "no_such_folder")
    with pytest.raises(DatasetUnavailableError, match=r"(?s)does not exist.*data.local_path="):
        dm.prepare_data()
    assert not (tmp_path / "cache").exists()


def test_folder_without_imdb_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    dm = make_datamodule(tmp_path, tmp_path / "empty")
    with pytest.raises(DatasetUnavailableError, match="holds no IMDB copy"):
        dm.prepare_data()


def test_corrupt_parquet_is_a_clear_error_and_keeps_the_cache(tmp_path, parquet_copy):
    good = make_datamodule(tmp_path, parquet_copy)
    good.prepare_data()
    cached = cache_entries(tmp_path / "cache")
    assert len(cached) == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.parquet").write_bytes(b"PAR1 this is not parquet")
    (broken / "test.parquet").write_bytes((parquet_copy / "test.parquet").read_bytes())
    with pytest.raises(DatasetUnavailableError, match="Could not read the IMDB copy"):
        make_datamodule(tmp_path, broken).prepare_data()
    # Nothing lost, nothing half-written (only a lock file may be left).
    assert cache_entries(tmp_path / "cache") == cached
    assert not list((tmp_path / "cache").glob("*.partial"))


def test_unreachable_hub_fails_fast_with_a_hint(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    dm = make_datamodule(tmp_path, None)
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError, match=r"(?s)unreachable.*data\.local_path="):
        dm.prepare_data()
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"maxlen": 0}, "data.maxlen must be a positive integer"),
        ({"batch_size": 0}, "data.batch_size must be a positive integer"),
        ({"max_features": 2}, "data.max_features must be an integer >= 3"),
        ({"padding": "left"}, "data.padding must be 'pre' or 'post'"),
        ({"val_size": -1}, "data.val_size must be"),
        ({"val_size": 1.5}, "data.val_size must be"),
    ],
)
def test_bad_settings_are_rejected_up_front(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_datamodule(tmp_path, None, **kwargs)


def test_val_size_larger_than_train_is_rejected(tmp_path, parquet_copy):
    with pytest.raises(ValueError, match="leaves no training texts"):
        make_datamodule(tmp_path, parquet_copy, val_size=600).prepare_data()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix != ".lock"]


def test_splits_move_to_an_accelerator_once(tmp_path, parquet_copy):
    from types import SimpleNamespace

    dm = make_datamodule(tmp_path, parquet_copy)
    # A stand-in for a Trainer on an accelerator: "meta" tensors need no GPU.
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    dm.setup("fit")
    assert {split.ids.device.type for split in dm.splits.values()} == {"meta"}
    batch = next(iter(dm.train_dataloader()))
    assert batch["ids"].device.type == "meta" and batch["labels"].device.type == "meta"

    on_cpu = make_datamodule(tmp_path, parquet_copy, tensors_on_device=False)
    on_cpu.trainer = dm.trainer
    on_cpu.setup("fit")
    assert on_cpu.splits["train"].ids.device.type == "cpu"

    # As train.py does it: set up first (to read the classes), the trainer comes later.
    early = make_datamodule(tmp_path, parquet_copy)
    early.setup("fit")
    early.trainer = dm.trainer
    early.setup("fit")
    assert {split.ids.device.type for split in early.splits.values()} == {"meta"}


def test_imdb_from_the_hub_leaves_out_its_unsupervised_split(tmp_path, monkeypatch, reviews):
    import datasets

    from gru_lightning.data import imdb

    def hub(rows):
        return datasets.Dataset.from_dict({"text": [t for t, _ in rows],
                                           "label": [y for _, y in rows]})

    unlabeled = [(t, -1) for t, _ in reviews["test"]]  # the Hub's 50,000 have label -1
    monkeypatch.setattr(imdb, "load_from_hub", lambda *args: datasets.DatasetDict(
        train=hub(reviews["train"]), test=hub(reviews["test"]), unsupervised=hub(unlabeled)))
    dm = make_datamodule(tmp_path, None)
    dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [500, 100, 200]


def _copy_with(tmp_path: Path, rows: list[tuple[object, object]]) -> Path:
    """A parquet copy whose training split ends with `rows` (text, label)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "copy"
    root.mkdir()
    train = synthetic_reviews(300, seed=0) + rows
    pq.write_table(pa.table({"text": [t for t, _ in train], "label": [y for _, y in train]}),
                   root / "train.parquet")
    test = synthetic_reviews(50, seed=1)
    pq.write_table(pa.table({"text": [t for t, _ in test], "label": [y for _, y in test]}),
                   root / "test.parquet")
    return root


@pytest.mark.parametrize(("bad_label", "shown"), [(2, "2 in row(s) 300, 302"),
                                                  (None, "None in row(s) 300, 302"),
                                                  (-1, "-1 in row(s) 300, 302")])
def test_labels_other_than_0_and_1_are_one_clear_error_before_tokenizing(tmp_path, bad_label,
                                                                         shown):
    copy = _copy_with(tmp_path, [("a fine film", bad_label), ("ok", 1), ("meh", bad_label)])
    dm = make_datamodule(tmp_path, copy)
    with pytest.raises(DataError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert f"data.local_path='{copy}', train split" in message
    assert "labels must be 0 (negative) or 1 (positive)" in message and shown in message
    assert not cache_entries(tmp_path / "cache")  # nothing tokenized, nothing cached


@pytest.mark.parametrize("empty", [None, "", "   \n "])
def test_texts_that_are_blank_are_left_out_with_a_warning(tmp_path, caplog, empty):
    copy = _copy_with(tmp_path, [(empty, 1), ("a fine film", 1), (empty, 0)])
    dm = make_datamodule(tmp_path, copy, val_size=0)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert len(dm.splits["train"]) == 301  # 300 + the one with text
    assert ("train split: 2 text(s) with nothing in them (null or blank) left out: row(s) "
            "300, 302") in caplog.text


def test_a_split_with_no_text_at_all_is_an_error(tmp_path):
    copy = _copy_with(tmp_path, [])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["", None], "label": [0, 1]}), copy / "test.parquet")
    with pytest.raises(DataError, match="test split: no row has any text"):
        make_datamodule(tmp_path, copy).prepare_data()


def test_missing_columns_are_a_clear_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "copy"
    root.mkdir()
    for split in ("train", "test"):
        pq.write_table(pa.table({"review": ["good", "bad"], "label": [1, 0]}),
                       root / f"{split}.parquet")
    with pytest.raises(DataError, match=r"train split: no column\(s\) \['text'\]"):
        make_datamodule(tmp_path, root).prepare_data()


@pytest.mark.parametrize("file", ["entry.pt", "train-ids.npy", "val-texts.arrow"])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing"])
def test_a_damaged_cache_is_rebuilt_with_a_warning(tmp_path, parquet_copy, caplog, file,
                                                   damage):
    first = make_datamodule(tmp_path, parquet_copy)
    first.setup("fit")
    expected = {split: first.splits[split].ids.clone() for split in ("train", "val", "test")}
    texts = list(first.split_texts()["val"])
    path = first.cache_path() / file
    content = path.read_bytes()
    path.unlink()  # a new file, as a crash or a full disk leaves it (first's map stays valid)
    if damage != "missing":
        path.write_bytes({"truncate": content[: len(content) // 3], "garbage": b"not a cache",
                          "empty": b""}[damage])
    again = make_datamodule(tmp_path, parquet_copy)
    with caplog.at_level(logging.WARNING):
        again.prepare_data()
        again.setup("fit")
    assert "is unreadable" in caplog.text and "it is derived data, so it is built again" \
        in caplog.text
    for split in ("train", "val", "test"):
        assert torch.equal(again.splits[split].ids, expected[split])
    assert path.read_bytes() == content or file == "entry.pt"  # whole again
    assert list(again.split_texts()["val"]) == texts


def test_split_texts_match_the_tensors_and_are_read_from_disk(tmp_path, parquet_copy):
    dm = make_datamodule(tmp_path, parquet_copy)
    dm.prepare_data()
    dm.setup("fit")
    texts = dm.split_texts()
    assert {s: len(t) for s, t in texts.items()} == {"train": 500, "val": 100, "test": 200}
    for split in ("train", "val", "test"):  # the same texts, in the order of the tensors
        assert torch.equal(dm.text_encoder.encode(texts[split]).to(torch.int32),
                           dm.splits[split].ids)
        assert isinstance(texts[split], TextColumn)
    # The ids are a memory map of the cache entry's file, not a copy in memory.
    assert dm.splits["train"].ids_file == dm.cache_path() / "train-ids.npy"
    assert mapped_file(dm.splits["train"].ids) == str(dm.splits["train"].ids_file)


def test_a_text_column_reads_like_a_list_across_its_batches(tmp_path):
    texts = [f"text {i}" for i in range(2 * CHUNK + 5)]
    writer = TextWriter(tmp_path / "t.arrow")
    writer.extend(texts[:7])
    writer.extend(texts[7:])
    assert writer.close() == len(texts)
    column = TextColumn(tmp_path / "t.arrow")
    assert len(column) == len(texts) and list(column) == texts
    assert column[CHUNK - 2 : CHUNK + 3] == texts[CHUNK - 2 : CHUNK + 3]
    assert column[-1] == texts[-1] and column[::CHUNK] == texts[::CHUNK]
    assert [len(c) for c in in_batches(column, CHUNK)] == [CHUNK, CHUNK, 5]
    assert pickle.loads(pickle.dumps(column))[CHUNK] == texts[CHUNK]
    with pytest.raises(IndexError):
        column[len(texts)]
    empty = TextWriter(tmp_path / "e.arrow")
    assert empty.close() == 0 and len(TextColumn(tmp_path / "e.arrow")) == 0


def test_a_pickled_split_maps_the_file_again(tmp_path, parquet_copy):
    """What ddp_spawn sends each rank: the file's name, not a copy of its ids."""
    dm = make_datamodule(tmp_path, parquet_copy)
    dm.setup("fit")
    split = dm.splits["train"]
    assert len(pickle.dumps(split)) < split.ids.numel() * 4 // 2  # the labels, not the ids
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # registers the tensor reducers ddp_spawn pickles with

    copy = pickle.loads(ForkingPickler.dumps(split))
    assert torch.equal(copy.ids, split.ids) and torch.equal(copy.labels, split.labels)
    assert copy.ids_file == split.ids_file and mapped_file(copy.ids) == str(split.ids_file)


@pytest.mark.parametrize("drop_last", [False, True])
def test_slice_batch_sampler_gives_batch_samplers_batches(drop_last):
    """The same batches in the same order as torch's BatchSampler (so a seed gives the same
    run as before), as index tensors."""
    dataset = range(203)
    torch.manual_seed(3)
    expected = list(BatchSampler(RandomSampler(dataset), 64, drop_last))
    torch.manual_seed(3)
    batches = list(SliceBatchSampler(RandomSampler(dataset), 64, drop_last))
    assert [b.tolist() for b in batches] == expected
    assert len(batches) == len(SliceBatchSampler(SequentialSampler(dataset), 64, drop_last))


def test_an_entry_whose_build_fails_leaves_nothing_behind(tmp_path):
    from gru_lightning.data.store import build_entry

    def fails(folder):
        (folder / "train-ids.npy").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_entry(tmp_path / "entry", fails)
    assert list(tmp_path.iterdir()) == []  # neither the entry nor its partial folder


def test_holdout_plan_is_a_pure_function_of_rows_sizes_and_seed():
    from gru_lightning.data.holdout import holdout_plan

    kept = {"train": torch.arange(0, 200, 2)}  # rows with text: every other one
    plan = holdout_plan(kept, test_size=0.2, val_size=10, seed=7, setting="data.x")
    again = holdout_plan(kept, test_size=0.2, val_size=10, seed=7, setting="data.x")
    assert {s: p.rows.tolist() for s, p in plan.items()} == {
        s: p.rows.tolist() for s, p in again.items()}
    assert [len(plan[s].rows) for s in ("train", "val", "test")] == [70, 10, 20]
    assert {p.origin for p in plan.values()} == {"train"}
    together = torch.cat([plan[s].rows for s in ("train", "val", "test")])
    assert sorted(together.tolist()) == kept["train"].tolist()  # disjoint, nothing lost
    own = holdout_plan({"train": torch.arange(50), "val": torch.arange(5),
                        "test": torch.arange(9)}, None, 1000, 7, "data.x")
    assert {s: (p.origin, len(p.rows)) for s, p in own.items()} == {
        "train": ("train", 50), "val": ("val", 5), "test": ("test", 9)}
    with pytest.raises(DataError, match=r"data\.x has no test split: set data\.test_size"):
        holdout_plan(kept, None, 10, 7, "data.x")


def test_a_data_config_naming_no_source_class_is_one_message():
    with pytest.raises(ValueError, match=r"data\.source must name a TextSource class"):
        TextDataModule.from_settings("gru_lightning.data.datamodule.TextDataModule")
