"""The package as pyproject.toml declares it: every subpackage and the configs in the wheel,
the `gru-lightning` command, training from any folder. The wheel itself, installed in a fresh
venv and used from another folder, is tests/installed_wheel.sh (`make check-wheel`, in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from types import SimpleNamespace

import pytest

from gru_lightning import cli
from tests.conftest import ROOT, SMALL

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_and_config_file_is_in_the_wheel():
    setuptools = PYPROJECT["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "gru_lightning").rglob("__init__.py")}
    assert found | {"gru_lightning.conf"} == set(setuptools["packages"])
    assert setuptools["package-dir"] == {"gru_lightning.conf": "conf"}
    globs = setuptools["package-data"]["gru_lightning.conf"]
    configs = {p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*.yaml")}
    assert all(any(c.match(g) and len(c.parts) == len(g.split("/")) for g in globs)
               for c in configs)
    assert setuptools["package-data"]["gru_lightning.runtime"] == ["csrc/*.cpp"]
    assert list((ROOT / "gru_lightning" / "runtime" / "csrc").glob("*.cpp"))


def test_the_command_dispatches_to_each_modules_main(monkeypatch, capsys):
    assert PYPROJECT["project"]["scripts"] == {"gru-lightning": "gru_lightning.cli:main"}
    seen = []
    # Each module stands in for itself: serve's needs the serve extra.
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: SimpleNamespace(
        main=lambda argv: seen.append((name, argv)) or 0))
    for command in ("predict", "evaluate", "serve", "report"):
        assert cli.main([command, "CKPT", "--x"]) == 0
    assert seen == [(f"gru_lightning.{c}", ["CKPT", "--x"])
                    for c in ("predict", "evaluate", "serve", "report")]
    assert cli.main(["--help"]) == 0 and "commands:" in capsys.readouterr().out
    assert cli.main([]) == 2 and "usage: gru-lightning COMMAND" in capsys.readouterr().err
    assert cli.main(["fit"]) == 2
    assert "unknown command 'fit'" in capsys.readouterr().err


def test_training_runs_from_any_folder_with_outputs_under_it(tmp_path, parquet_copy):
    # `gru-lightning train` (cli.py) runs the same main: tests/installed_wheel.sh uses it.
    result = subprocess.run(
        [sys.executable, "-m", "gru_lightning.train", "debug=fast_dev_run",
         f"data.local_path={parquet_copy}",
         *SMALL], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "outputs").glob("*/*/metrics.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["status"] == "completed"
    assert list((tmp_path / ".cache").iterdir())  # the cache is the folder's own too


def test_a_kernel_source_missing_from_an_installation_is_named(tmp_path, monkeypatch):
    from gru_lightning.runtime import kernels

    monkeypatch.setattr(kernels, "CSRC", tmp_path)  # as a wheel without its csrc/ would be
    with pytest.raises(kernels.KernelUnavailable, match=r"its source .*gru_cpu.cpp is missing: "
                                                        r"this gru-lightning installation is "
                                                        r"incomplete"):
        kernels._build("gru_lightning_missing", "gru_cpu.cpp", [], [])
