"""Configs mirror constructors: every knob in conf/ is a real argument of its `_target_`,
with the same default as the constructor, so the default lives in one place in effect."""

from __future__ import annotations

import importlib
import inspect

import pytest
from omegaconf import OmegaConf

from gru_lightning.train import CONFIG_DIR

TARGET_FILES = ["data/imdb.yaml", "model/gru.yaml"]


def _target(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("relative", TARGET_FILES)
def test_config_keys_are_constructor_arguments_with_the_same_defaults(relative):
    config = OmegaConf.load(CONFIG_DIR / relative)
    signature = inspect.signature(_target(config._target_))
    for key in config:
        if key == "_target_":
            continue
        assert key in signature.parameters, f"{relative}: {key} is not an argument"
        value = config._get_node(key)._value()
        if isinstance(value, str) and value.startswith("${"):
            continue  # interpolated from another group, e.g. vocab_size: ${data.max_features}
        default = signature.parameters[key].default
        if key != "cache_dir":  # a path: the config puts it under paths.cache_dir
            assert value == default, f"{relative}: {key}={value!r}, constructor says {default!r}"
    missing = set(signature.parameters) - set(config) - {"self"}
    assert not missing, f"{relative} does not expose {missing}"


def test_every_config_group_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        for overrides in (["trainer=cpu"], ["trainer=gpu"], ["logger=csv"],
                          ["callbacks=early_stopping"], ["callbacks=ema"],
                          ["experiment=keras_seed"], ["experiment=best"],
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
