"""Configs mirror constructors: every knob in conf/ is a real argument of its `_target_`,
with the same default as the constructor, so the default lives in one place in effect."""

from __future__ import annotations

import importlib
import inspect

import pytest
from omegaconf import OmegaConf

from gru_lightning.train import CONFIG_DIR

TARGET_CONFIGS = ["data=imdb", "data=hub", "data=files", "data=folder", "model=gru",
                  "ngram=nbsvm"]
# Set by train.py from the data, not by a config.
FROM_THE_DATA = {"num_classes"}


def _target(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _parameters(cls) -> dict[str, inspect.Parameter]:
    """The constructor's arguments, with those it passes on (**settings) to its bases'."""
    parameters: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass.__module__.startswith("lightning"):
            continue
        own = inspect.signature(klass.__init__).parameters
        parameters.update({k: v for k, v in own.items() if k not in parameters
                           and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)})
        if not any(v.kind == v.VAR_KEYWORD for v in own.values()):
            break
    parameters.pop("self", None)
    return parameters


@pytest.mark.parametrize("choice", TARGET_CONFIGS)
def test_config_keys_are_constructor_arguments_with_the_same_defaults(choice):
    from hydra import compose, initialize_config_dir

    group = choice.split("=")[0]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        config = compose("train", overrides=[choice])[group]
    parameters = _parameters(_target(config._target_))
    for key in config:
        if key == "_target_":
            continue
        assert key in parameters, f"{choice}: {key} is not an argument"
        value = config._get_node(key)._value()
        if isinstance(value, str) and value.startswith("${"):
            continue  # interpolated from another group, e.g. vocab_size: ${data.max_features}
        value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        default = parameters[key].default
        default = list(default) if isinstance(default, tuple) else default
        if key != "cache_dir":  # a path: the config puts it under paths.cache_dir
            assert value == default, f"{choice}: {key}={value!r}, constructor says {default!r}"
    missing = set(parameters) - set(config) - FROM_THE_DATA
    assert not missing, f"{choice} does not expose {missing}"


def test_every_config_group_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        for overrides in (["trainer=cpu"], ["trainer=gpu"], ["logger=csv"],
                          ["callbacks=early_stopping"], ["callbacks=ema"],
                          ["experiment=keras_seed"], ["experiment=best"],
                          ["experiment=gru_nbsvm"],
                          ["experiment=ag_news"], ["data=hub"], ["data=files"],
                          ["data=folder"],
                          ["debug=fast_dev_run"]):
            cfg = compose("train", overrides=overrides)
            assert cfg.model.vocab_size == cfg.data.max_features
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        seed = compose("train", overrides=["experiment=keras_seed"])
        assert seed.data.val_size == 0 and seed.data.batch_size == 64
        assert seed.trainer.max_epochs == 3 and seed.test_weights == "last"
        assert compose("train", overrides=["trainer=gpu"]).trainer.accelerator == "gpu"
        best = compose("train", overrides=["experiment=best"])
        # The experiment swaps in the callbacks with the weight average, keeping the rest.
        assert {"ema", "model_checkpoint", "last_checkpoint"} <= set(best.callbacks)
        assert best.model.bidirectional and best.data.batch_size == 16
        stacked = compose("train", overrides=["experiment=gru_nbsvm"])
        assert stacked.ngram.max_n == 3 and stacked.ngram.folds == 0  # best's GRU, stacked
        assert stacked.model == best.model and stacked.data == best.data
        assert compose("train").get("ngram") is None  # no n-gram model by default
