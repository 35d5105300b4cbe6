"""The fork contract: a dataset, a network or a config folder of one's own plugs in untouched.

A datamodule and a network factory are written into a temporary folder, outside mlplab, with
their YAML files; real console scripts find the code through ``PYTHONPATH`` and the configs
through ``hydra.searchpath`` or ``--config-dir``, as a researcher's fork would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import NO_PROGRESS, SMALL_TRAIN, read_metrics, run_cli
from mlplab.data.rings import RingsDataModule, make_rings
from mlplab.tasks.common import CONF_DIR, ConfigError, instantiate, run_task
from mlplab.tasks.train import _train_body, check_resume

# A datamodule as Lightning's documentation writes one: TensorDatasets, standard DataLoaders.
# Two Gaussian blobs in 3-D, one per class; `spread` is its own argument.
BLOBS = """
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class Blobs(pl.LightningDataModule):
    def __init__(self, num_features=3, num_classes=2, spread=0.5, points=200, seed=0,
                 batch_size=32, scale=(1.0, 1.0, 1.0)):
        super().__init__()
        if not spread > 0:
            raise ValueError(f"spread={spread!r} is invalid: must be a number > 0")
        self.save_hyperparameters()

    def setup(self, stage=None):
        hp = self.hparams
        generator = torch.Generator().manual_seed(hp.seed)
        centres = torch.eye(hp.num_classes, hp.num_features)
        y = torch.arange(hp.num_classes).repeat_interleave(hp.points)
        noise = hp.spread * torch.randn(len(y), hp.num_features, generator=generator)
        X = (centres[y] + noise) * torch.tensor(hp.scale)
        order = torch.randperm(len(y), generator=generator)
        X, y = X[order], y[order]
        n_test = len(y) // 5
        self.test_set = TensorDataset(X[:n_test], y[:n_test])
        self.train_set = TensorDataset(X[n_test:], y[n_test:])

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(self.train_set, self.hparams.batch_size, shuffle=True,
                          generator=generator)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=64)
"""
BLOBS_YAML = """
_target_: blobs.Blobs
num_features: 3
num_classes: 2
spread: 0.5
points: 200
seed: ${seed}
batch_size: 32
# A list reaches the constructor as a plain list, so its checkpoint loads with weights_only.
scale: [1.0, 1.0, 1.0]
"""
# A network factory of one's own: any function returning an nn.Module, annotated as such.
TINY_NET = """
from torch import nn


def two_layer(in_features: int, out_features: int, hidden: int = 8) -> nn.Module:
    if not (isinstance(hidden, int) and hidden >= 1):
        raise ValueError(f"hidden={hidden!r} is invalid: must be an integer >= 1")
    return nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, out_features))
"""
TINY_YAML = """
_target_: tiny_net.two_layer
in_features: ${data.num_features}
out_features: ${data.num_classes}
hidden: 8
"""
QUICK = ["trainer.max_epochs=3", *NO_PROGRESS, "grid_size=40"]


@pytest.fixture
def fork(tmp_path: Path) -> Path:
    """A folder of one's own: blobs.py and tiny_net.py, and conf/data, conf/model for them."""
    folder = tmp_path / "fork"
    (folder / "conf" / "data").mkdir(parents=True)
    (folder / "conf" / "model").mkdir(parents=True)
    (folder / "blobs.py").write_text(textwrap.dedent(BLOBS))
    (folder / "tiny_net.py").write_text(textwrap.dedent(TINY_NET))
    (folder / "conf" / "data" / "blobs.yaml").write_text(BLOBS_YAML)
    (folder / "conf" / "model" / "tiny.yaml").write_text(TINY_YAML)
    return folder


def run_in(fork: Path, task: str, *args: str):
    """A console script with the fork's code on PYTHONPATH, outputs under the fork."""
    path = os.pathsep.join(p for p in (str(fork), os.environ.get("PYTHONPATH", "")) if p)
    logs = f"paths.log_dir={fork / 'logs'}"
    return run_cli(task, *args, logs, cwd=fork, env={"PYTHONPATH": path})


def hparams_in(folder: Path) -> dict:
    """The HPARAMS entry of a run's TensorBoard folder, read with TensorBoard's own reader."""
    values: dict = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):  # <run>/tensorboard/<settings>/
        acc = ea.EventAccumulator(str(path), size_guidance={ea.TENSORS: 0})
        acc.Reload()
        with contextlib.suppress(KeyError):  # KeyError: no hparams entry in this file
            content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
            start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
            for key, value in start.hparams.items():
                values[key] = getattr(value, value.WhichOneof("kind"))
    return values


def train_and_eval(fork: Path, *args: str) -> tuple[Path, dict]:
    """mlplab-train, then mlplab-eval on its checkpoint, which must give the same test metrics."""
    trained = run_in(fork, "train", *args, *QUICK)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run_dir,) = (fork / "logs" / "train" / "runs").iterdir()
    record = read_metrics(run_dir)
    evaluated = run_in(fork, "eval", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (eval_dir,) = (fork / "logs" / "eval" / "runs").iterdir()
    again = read_metrics(eval_dir)["metrics"]
    # Rebuilt from the checkpoint's record alone: the same data, network and loss, bit for bit.
    assert again["test/acc"] == record["metrics"]["test/acc"]
    assert again["test/loss"] == record["metrics"]["test/loss"]
    return run_dir, record


def multirun_in(fork: Path, *args: str) -> tuple[list[dict], str]:
    result = run_in(fork, "train", "-m", *args, *QUICK, "logger=none", "figures=false")
    (sweep,) = (fork / "logs" / "train" / "multiruns").iterdir()
    jobs = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [read_metrics(job) for job in jobs], result.stderr


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_datamodule_of_ones_own_plugs_in(fork) -> None:
    searchpath = f"hydra.searchpath=[file://{fork / 'conf'}]"
    run_dir, record = train_and_eval(fork, searchpath, "data=blobs")
    assert record["status"] == "ok"
    assert record["metrics"]["test/acc"] > 90.0  # two blobs one unit apart, spread 0.5
    hparams = hparams_in(run_dir / "tensorboard")
    assert hparams["data"] == "blobs" and hparams["data/spread"] == 0.5
    assert hparams["model/in_features"] == 3 and hparams["model/out_features"] == 2
    assert {k: v for k, v in record["hparams"].items() if k.startswith("data")} == {
        "data": "blobs", "data/num_features": 3, "data/num_classes": 2, "data/spread": 0.5,
        "data/points": 200, "data/seed": 2021, "data/batch_size": 32,
        "data/scale": "[1.0, 1.0, 1.0]",
    }  # fmt: skip
    # 3-D inputs: no decision map, said once in the log; the loss curve is drawn.
    assert not (run_dir / "decision_map.png").exists()
    assert (run_dir / "training_loss.png").is_file()
    log = (run_dir / "train.log").read_text()
    assert log.count("no decision map: the inputs have shape torch.Size([80, 3])") == 1
    # The checkpoint records what built the run, in plain values.
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["built_from"]["data"]["_target_"] == "blobs.Blobs"
    assert saved["datamodule_hyper_parameters"]["scale"] == [1.0, 1.0, 1.0]

    # --config-dir, and a multirun over the datamodule's own key, one value refused by it.
    records, stderr = multirun_in(fork, "--config-dir", str(fork / "conf"), "data=blobs",
                                  "data.spread=0.25,-1")  # fmt: skip
    assert [r["status"] for r in records] == ["ok", "failed"]
    assert records[0]["hparams"]["data/spread"] == 0.25
    assert records[1]["error"] == "data.spread=-1 is invalid: must be a number > 0"
    assert "mlplab: 1 of 2 jobs ok" in stderr
    ckpt = Path(records[0]["output_dir"]) / "checkpoints" / "last.ckpt"
    evaluated = run_in(fork, "eval", f"ckpt_path={ckpt}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (again,) = (
        read_metrics(run)["metrics"]
        for run in (fork / "logs" / "eval" / "runs").iterdir()
        if f"ckpt_path={ckpt}" in read_metrics(run)["overrides"]
    )
    for key in ("test/acc", "test/loss"):
        assert again[key] == records[0]["metrics"][key]


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_network_of_ones_own_plugs_in(fork) -> None:
    run_dir, record = train_and_eval(
        fork, "--config-dir", str(fork / "conf"), "model=tiny", *SMALL_TRAIN[:2]
    )
    assert record["status"] == "ok"
    hparams = hparams_in(run_dir / "tensorboard")
    assert hparams["model"] == "tiny" and hparams["model/hidden"] == 8
    assert hparams["model/params"] == (2 * 8 + 8) + (8 * 4 + 4)
    assert hparams["data"] == "spiral"
    assert (run_dir / "decision_map.png").is_file()  # the spiral is 2-D
    records, _ = multirun_in(
        fork, f"hydra.searchpath=[file://{fork / 'conf'}]", "model=tiny", "model.hidden=4,0",
        *SMALL_TRAIN[:2],
    )  # fmt: skip
    assert [r["status"] for r in records] == ["ok", "failed"]
    assert records[0]["hparams"]["model/params"] == (2 * 4 + 4) + (4 * 4 + 4)
    assert records[1]["error"] == "model.hidden=0 is invalid: must be an integer >= 1"


@pytest.mark.slow
@pytest.mark.subprocess
def test_an_experiment_of_ones_own_from_another_folder(fork) -> None:
    (fork / "conf" / "experiment").mkdir()
    (fork / "conf" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /data: blobs\n  - override /model: tiny\n"
        "model:\n  hidden: 5\ntrainer:\n  max_epochs: 1\n"
    )
    result = run_in(fork, "train", f"hydra.searchpath=[file://{fork / 'conf'}]",
                    "experiment=mine", "logger=none", "figures=false", *NO_PROGRESS)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (fork / "logs" / "train" / "runs").iterdir()
    hparams = read_metrics(run_dir)["hparams"]
    assert (hparams["data"], hparams["model"], hparams["model/hidden"]) == ("blobs", "tiny", 5)


# --- the rings, the worked example --------------------------------------------------------------


def test_rings_lie_on_their_circles_and_are_seeded() -> None:
    X, y = make_rings(4, 0.0, 50, generator=torch.Generator().manual_seed(1))
    assert X.shape == (200, 2) and X.dtype == torch.float32 and y.dtype == torch.int64
    radius = X.norm(dim=1)
    for k in range(4):
        torch.testing.assert_close(radius[y == k], torch.full((50,), (k + 1) / 4))
    again, _ = make_rings(4, 0.0, 50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(X, again)
    noisy, _ = make_rings(4, 0.1, 50, generator=torch.Generator().manual_seed(1))
    assert 0.05 < (noisy - X).std().item() < 0.2  # not only the angles: noise on top


def test_rings_datamodule_splits_like_the_spiral() -> None:
    dm = RingsDataModule(points_per_class=100, val_fraction=0.25, seed=7)
    dm.setup("fit")
    assert (len(dm.X_train), len(dm.X_val), len(dm.X_test)) == (180, 60, 60)
    assert set(dm.hparams) == {
        "num_classes", "noise", "points_per_class", "num_features", "test_fraction",
        "val_fraction", "batch_size", "seed", "eval_batch_size",
    }  # fmt: skip
    other = RingsDataModule(points_per_class=100, val_fraction=0.25, seed=7)
    other.setup("fit")
    assert torch.equal(dm.X_test, other.X_test)
    with pytest.raises(ValueError, match=r"^noise=-0\.1 is invalid: must be a number >= 0\.0$"):
        RingsDataModule(noise=-0.1)


def test_rings_train_to_a_sensible_accuracy(compose_config, tmp_path) -> None:
    overrides = [
        "data=rings", "data.points_per_class=200", "trainer.max_epochs=15", "optimizer.lr=0.01",
        "model.width=32", "logger=none", "callbacks=none",
    ]  # fmt: skip
    cfg = compose_config("train", overrides)
    out = tmp_path / "run"
    run_task(cfg, _train_body, output_dir=out, overrides=overrides, multirun=False)
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "ok" and record["hparams"]["data"] == "rings"
    assert record["metrics"]["test/acc"] > 90.0  # chance is 33 %
    assert (out / "decision_map.png").read_bytes()[:4] == b"\x89PNG"


# --- the contract's pieces ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "key", "message"),
    [
        # mlplab's convention: the message names the argument.
        ({"_target_": "mlplab.data.rings.RingsDataModule", "noise": -1}, "data",
         "data.noise=-1 is invalid: must be a number >= 0.0"),
        # An argument the target does not take.
        ({"_target_": "torch.nn.CrossEntropyLoss", "smoothing": 0.1}, "loss",
         "loss.smoothing=0.1 is invalid: is not an argument of torch.nn.CrossEntropyLoss"),
        # Another library's message: the argument without which the object builds.
        ({"_target_": "torch.nn.Dropout", "p": 1.5, "inplace": False}, "model.dropout",
         "model.dropout.p=1.5 is invalid: dropout probability has to be between 0 and 1"),
        ({"_target_": "mlplab.nowhere.Thing"}, "data",
         "data._target_='mlplab.nowhere.Thing' is invalid: cannot be imported"),
        ({"foo": 1}, "data", "data={'foo': 1} is invalid: must be a config whose _target_"),
    ],
)  # fmt: skip
def test_instantiate_names_the_argument_at_fault(node, key, message) -> None:
    with pytest.raises(ConfigError) as info:
        instantiate(node, key)
    assert str(info.value).startswith(message), str(info.value)


def test_resume_guard_compares_every_recorded_argument(tmp_path) -> None:
    record = {"data": {"_target_": "blobs.Blobs", "spread": 0.5}, "model": {"_target_": "m.f"}}
    checkpoint = {"hyper_parameters": {"built_from": record}}
    check_resume(tmp_path, checkpoint, record)  # the same run
    changed = {**record, "data": {"_target_": "blobs.Blobs", "spread": 0.7}}
    with pytest.raises(Exception, match=r"trained with data\.spread=0\.5 but this run has data\."):
        check_resume(tmp_path, checkpoint, changed)
    other = {**record, "data": {"_target_": "rings.Rings", "spread": 0.5}}
    with pytest.raises(Exception, match=r"trained with data='blobs\.Blobs' but this run has data="):
        check_resume(tmp_path, checkpoint, other)
    with pytest.raises(Exception, match=r"does not record what built its run"):
        check_resume(tmp_path, {"hyper_parameters": {}}, record)


def test_every_data_option_keeps_the_contract(compose_config) -> None:
    for option in ("spiral", "rings"):
        cfg = compose_config("train", [f"data={option}"])
        assert cfg.model.in_features == cfg.data.num_features
        assert cfg.model.out_features == cfg.data.num_classes
        datamodule = instantiate(cfg.data, "data")
        datamodule.setup("fit")
        x, y = next(iter(datamodule.train_dataloader()))
        assert x.shape[1] == cfg.data.num_features
        assert int(y.max()) < cfg.data.num_classes


def test_no_task_names_a_dataset_or_network_key() -> None:
    """The train and eval tasks read only the contract's keys of data and model."""
    tasks = Path(__file__).parents[1] / "src" / "mlplab" / "tasks"
    own_keys = {"sigma", "points_per_class", "noise", "hidden_units", "width", "depth",
                "activation", "param_budget", "in_features"}  # fmt: skip
    for name in ("train.py", "eval.py", "runtime.py"):
        text = (tasks / name).read_text()
        for key in own_keys:
            assert f'"{key}"' not in text and f".{key}" not in text, (name, key)
    assert (
        yaml.safe_load((tasks.parents[2] / "conf" / "model" / "mlp.yaml").read_text())[
            "in_features"
        ]
        == "${data.num_features}"
    )


CSV_LOGGER = """
_target_: pytorch_lightning.loggers.CSVLogger
save_dir: ${paths.output_dir}
name: elsewhere
version: ""
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_every_task_finds_options_in_another_folder(tmp_path) -> None:
    """--config-dir, hydra.searchpath (in a multirun) and --config-path, for the other tasks."""
    mine = tmp_path / "mine"
    (mine / "logger").mkdir(parents=True)
    (mine / "logger" / "elsewhere.yaml").write_text(CSV_LOGGER)
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    for task, args in (("approx", ["n_points=5"]), ("lif", ["mode=trace"])):
        result = run_cli(task, "--config-dir", str(mine), "logger=elsewhere", *args, logs,
                         cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        (run_dir,) = (tmp_path / "logs" / task / "runs").iterdir()
        assert (run_dir / "elsewhere" / "metrics.csv").is_file()  # the option from `mine`
    result = run_cli("approx", "-m", f"hydra.searchpath=[file://{mine}]", "logger=elsewhere",
                     "n_points=4,8", logs, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "approx" / "multiruns").iterdir()
    assert all((sweep / job / "elsewhere" / "metrics.csv").is_file() for job in "01")
    # --config-path: a primary config folder of one's own (here a copy with another target).
    shutil.copytree(CONF_DIR, tmp_path / "conf")
    primary = tmp_path / "conf" / "approx.yaml"
    primary.write_text(primary.read_text().replace("target: sin", "target: cos"))
    result = run_cli("approx", "--config-path", str(tmp_path / "conf"), "logger=none",
                     f"paths.log_dir={tmp_path / 'own'}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "own" / "approx" / "runs").iterdir()
    assert yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["target"] == "cos"


def test_a_network_whose_outputs_are_not_the_classes_stops_at_its_first_step(tmp_path) -> None:
    import functools

    import pytorch_lightning as pl
    from torch import nn

    from mlplab.data.datamodule import SpiralDataModule
    from mlplab.models.classifier import Classifier

    sgd = functools.partial(torch.optim.SGD, lr=0.1)
    model = Classifier(nn.Linear(2, 5), nn.CrossEntropyLoss(), sgd, num_classes=4)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match=r"returns 5 logits per sample for num_classes=4"):
        trainer.fit(model, datamodule=SpiralDataModule(points_per_class=20, batch_size=8))
    assert trainer.global_step == 0
