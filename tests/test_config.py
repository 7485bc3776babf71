"""The configs: every knob in conf/ is a real argument of its `_target_` (with the same
default as the constructor, for this project's own), and every experiment runs, a batch of
each stage, so a broken one fails here."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from gru_lightning.data.base import TextSource
from gru_lightning.data.datamodule import TextDataModule
from gru_lightning.train import CONFIG_DIR, compose_config, train
from tests.conftest import QUIET, synthetic_reviews, write_parquet_copy

CHOICES = ["data=imdb", "data=hub", "data=files", "data=folder", "data=lines",
           "model=classifier", "ngram=nbsvm", "vectors=word2vec", "pretrain=lm"]
# The own-data sources' overlay: the data's own choices (conf/data/_own.yaml) and the training
# defaults they select (conf/recipe/own_data.yaml), in place of the constructors' defaults
# (IMDB's and the notebook's).
OWN_DATA = OmegaConf.merge({"data": OmegaConf.load(CONFIG_DIR / "data" / "_own.yaml")},
                           OmegaConf.load(CONFIG_DIR / "recipe" / "own_data.yaml"))
# Arguments train.py passes itself: the data's classes, the stack built from conf/ngram.
FROM_TRAIN_PY = {"num_classes", "stack"}


def _parameters(target, node: DictConfig) -> dict[str, inspect.Parameter]:
    """The arguments a `_target_` takes; `TextDataModule.from_settings` takes its `source`
    class's and the data module's."""
    if target == TextDataModule.from_settings:
        source = get_object(node.source)
        assert issubclass(source, TextSource), f"data.source={node.source} is no TextSource"
        own = dict(inspect.signature(source.__init__).parameters)
        shared = dict(inspect.signature(TextDataModule.__init__).parameters)
        parameters = {**own, **shared}
        parameters.pop("self")
        parameters["source"] = inspect.signature(TextDataModule.from_settings).parameters[
            "source"]
        return parameters
    parameters = dict(inspect.signature(target).parameters)
    parameters.pop("self", None)
    return parameters


def _check(node: DictConfig, where: str, overlay: DictConfig | None = None) -> None:
    target = get_object(node._target_)
    parameters = _parameters(target, node)
    own = node._target_.startswith("gru_lightning.")
    for key in node:
        if key in ("_target_", "_partial_"):
            continue
        assert key in parameters, f"{where}: {key} is not an argument of {node._target_}"
        if isinstance(node._get_node(key), DictConfig):
            _check(node[key], f"{where}.{key}", (overlay or {}).get(key))
            continue
        if overlay is not None and key in overlay:
            assert node[key] == overlay[key], f"{where}.{key} is not the overlay's {overlay[key]}"
            continue
        value = node._get_node(key)._value()
        if not own or (isinstance(value, str) and value.startswith("${")):
            continue  # another library's defaults, or interpolated from another group
        value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        default = parameters[key].default
        default = list(default) if isinstance(default, tuple) else default
        if key not in ("cache_dir", "source"):  # a path; the class the config names
            assert value == default, f"{where}.{key}={value!r}, the constructor says {default!r}"
    if own:
        missing = {k for k, p in parameters.items() if p.kind not in (p.VAR_KEYWORD,
                                                                       p.VAR_POSITIONAL)}
        missing -= set(node) | FROM_TRAIN_PY
        assert not missing, f"{where} does not expose {missing}"


@pytest.mark.parametrize("choice", CHOICES)
def test_config_keys_are_constructor_arguments_with_the_same_defaults(choice):
    group = choice.split("=")[0]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=[choice])
        own_data = choice in ("data=hub", "data=files", "data=folder", "data=lines")
        _check(cfg[group], group, OWN_DATA.get(group) if own_data else None)


def _topics_csv(tmp_path: Path) -> Path:
    """AG News' CSV shape: title, description, label 1-4."""
    import csv

    path = tmp_path / "topics.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["label", "title", "description"])
        for i, (text, _) in enumerate(synthetic_reviews(200, seed=2)):
            writer.writerow([1 + i % 4, f"topic{i % 4} news", text])
    return path


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment")
                                              .glob("*.yaml")))
def test_every_experiment_runs_a_batch(tmp_path, experiment):
    # Enough training reviews for the experiments' own 1,000 validation texts.
    # A local copy as the Hub's: with its unlabeled reviews (experiment=gru_nbsvm_vectors).
    imdb = write_parquet_copy(tmp_path / "imdb", {"train": synthetic_reviews(1200, seed=0),
                                                  "test": synthetic_reviews(100, seed=1),
                                                  "unsupervised": synthetic_reviews(300, seed=3)})
    data = ([f"data.train_file={_topics_csv(tmp_path)}"] if experiment == "ag_news"
            else [f"data.local_path={imdb}"])
    cfg = compose_config([f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}",
                          f"paths.cache_dir={tmp_path / 'cache'}", f"experiment={experiment}",
                          *data, "debug=fast_dev_run", "trainer.accelerator=cpu", *QUIET])
    metrics = train(cfg)
    assert metrics["epochs"] == 1 and "test/acc" in metrics
    assert len(metrics["classes"]) == (4 if experiment == "ag_news" else 2)


@pytest.mark.parametrize("overrides", [["trainer=cpu"], ["trainer=gpu"], ["trainer=ddp"],
                                       ["trainer=ddp_cpu"], ["logger=csv"],
                                       ["callbacks=early_stopping"], ["callbacks=ema"],
                                       ["callbacks=gradual_unfreezing"],
                                       ["data=hub"], ["data=files"], ["data=folder"],
                                       ["data=lines"], ["pretrain=lm"],
                                       ["hparams_search=optuna"], ["debug=fast_dev_run"]])
def test_every_config_group_composes_and_instantiates(overrides, tmp_path):
    """What train.py builds before any data work, for each choice of each group."""
    from hydra.utils import instantiate

    cfg = compose_config([f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}",
                          f"paths.cache_dir={tmp_path}", *overrides])
    instantiate(cfg.data)
    instantiate(cfg.model, _partial_=True)
    for group in ("callbacks", "logger"):
        for node in (cfg.get(group) or {}).values():
            if node is not None:
                instantiate(node)
