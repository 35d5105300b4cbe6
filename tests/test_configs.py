"""Every option of the training config groups composes, passes the checks, builds what it says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from pytorch_lightning.callbacks import (
    ModelCheckpoint,
    ModelSummary,
    RichModelSummary,
    RichProgressBar,
)
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy
from torch import nn
from torch.nn import functional as F

from mlplab.data.datamodule import SpiralDataModule
from mlplab.models.losses import CrossEntropy
from mlplab.models.mlp import MLP
from mlplab.tasks.checkpointing import ThrottledCheckpoint
from mlplab.tasks.common import CONF_DIR, ConfigError
from mlplab.tasks.eval import validate_eval_config
from mlplab.tasks.progress import EpochLines, stdout_is_terminal
from mlplab.tasks.runtime import (
    AtomicCheckpointIO,
    build_callbacks,
    build_logger,
    build_trainer,
)
from mlplab.tasks.train import build_model, build_run, check_task_config

# The groups of conf/train.yaml that belong to the training pipeline (sweep groups are tested
# with the sweeps).
TRAIN_GROUPS = (
    "data",
    "model",
    "loss",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "debug",
)
GPU_TRAINERS = {"gpu", "ddp"}
HAS_CUDA = torch.cuda.is_available()


def config_groups() -> dict[str, list[str]]:
    """Each config group of the train config and its options, as Hydra's config loader sees them."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = {g: loader.get_group_options(g) for g in (*TRAIN_GROUPS, "experiment")}
    GlobalHydra.instance().clear()
    return groups


def _options() -> list[tuple[str, str]]:
    groups = config_groups()
    return [(group, option) for group in (*TRAIN_GROUPS, "experiment") for option in groups[group]]


def build_everything(cfg) -> None:
    """Build what a training run builds from ``cfg`` (each constructor checks its arguments)."""
    check_task_config(cfg)
    build_run(cfg)
    logger = build_logger(cfg.get("logger"))
    build_trainer(cfg.trainer, logger, build_callbacks(cfg.get("callbacks")))


def test_groups_have_the_documented_options() -> None:
    groups = config_groups()
    assert set(groups["data"]) >= {"spiral", "rings"}
    assert set(groups["loss"]) >= {"custom_ce", "torch_ce"}
    assert set(groups["optimizer"]) >= {"adam", "sgd"}
    assert set(groups["trainer"]) >= {"cpu", "gpu", "ddp", "ddp_sim"}
    assert set(groups["logger"]) >= {"tensorboard", "csv", "none"}
    assert set(groups["callbacks"]) >= {"default", "none"}
    assert "fast" in groups["debug"] and "tutorial" in groups["experiment"]


@pytest.mark.parametrize(("group", "option"), _options())
def test_every_option_composes_and_builds(compose_config, group, option) -> None:
    cfg = compose_config("train", [f"{group}={option}"])
    assert cfg.task_name == "train"
    if group == "trainer" and option in GPU_TRAINERS and not HAS_CUDA:
        # Composes with the GPU keys; the checks refuse it on a machine without CUDA.
        assert cfg.trainer.accelerator == "gpu"
        assert cfg.trainer.deterministic is True
        if option == "ddp":
            assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == "auto"
        return
    build_everything(cfg)


def test_data_builds_the_tutorial_split(compose_config) -> None:
    cfg = compose_config("train", ["data=spiral", "seed=5"])
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, SpiralDataModule)
    datamodule.setup()
    assert datamodule.hparams.seed == 5  # ${seed} drives the data
    assert len(datamodule.X_train) == 3200 and len(datamodule.X_test) == 800


@pytest.mark.parametrize(
    ("loss", "kind"), [("custom_ce", CrossEntropy), ("torch_ce", nn.CrossEntropyLoss)]
)
def test_loss_options_are_cross_entropy(compose_config, loss, kind) -> None:
    cfg = compose_config("train", [f"loss={loss}", "model.width=8"])
    model = build_model(cfg)
    assert type(model.loss_fn) is kind
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.0, 3.0, -2.0, 1.0]])
    labels = torch.tensor([0, 3])
    expected = F.cross_entropy(logits, labels)
    torch.testing.assert_close(model.loss_fn(logits, labels), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("optimizer", "kind", "lr"), [("adam", torch.optim.Adam, 1e-3), ("sgd", torch.optim.SGD, 0.1)]
)
def test_optimizer_options(compose_config, optimizer, kind, lr) -> None:
    cfg = compose_config("train", [f"optimizer={optimizer}", "model.width=8"])
    model = build_model(cfg)
    built = model.configure_optimizers()
    assert type(built) is kind
    assert built.param_groups[0]["lr"] == lr
    params = {id(p) for p in built.param_groups[0]["params"]}
    assert params == {id(p) for p in model.net.parameters()}
    if optimizer == "sgd":
        assert built.param_groups[0]["momentum"] == 0.9


def test_model_builds_the_configured_mlp(compose_config) -> None:
    cfg = compose_config("train", ["model.width=16", "model.depth=3", "model.activation='Tanh()'"])
    net = build_model(cfg).net
    assert isinstance(net, MLP)
    assert net.hidden_units == [16, 16, 16]
    assert isinstance(net.mlp.Activation_2, nn.Tanh)
    cfg = compose_config("train", ["model.hidden_units=[5,7]", "data.num_classes=3"])
    net = build_model(cfg).net
    assert net.hidden_units == [5, 7] and net.out_features == 3  # out follows data.num_classes


@pytest.mark.parametrize("trainer", ["cpu", "ddp_sim"])
def test_cpu_trainers_instantiate(compose_config, tmp_path, trainer) -> None:
    cfg = compose_config("train", [f"trainer={trainer}", "logger=none", "callbacks=none"])
    built = build_trainer(cfg.trainer, None, [])
    assert built.max_epochs == 100
    assert isinstance(built.strategy.checkpoint_io, AtomicCheckpointIO)
    assert torch.are_deterministic_algorithms_enabled()  # trainer.deterministic: true
    assert Path(built.default_root_dir) == tmp_path / "run"
    if trainer == "cpu":
        assert isinstance(built.strategy, SingleDeviceStrategy)
        assert built.num_devices == 1
    else:
        assert isinstance(built.strategy, DDPStrategy)
        assert built.num_devices == 2 and built.accelerator.__class__.__name__ == "CPUAccelerator"


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on machines without CUDA")
@pytest.mark.parametrize("trainer", sorted(GPU_TRAINERS))
def test_gpu_trainers_are_refused_without_cuda(compose_config, trainer) -> None:
    cfg = compose_config("train", [f"trainer={trainer}"])
    # Lightning's own refusal, naming the key whose value it cannot use.
    with pytest.raises(
        ConfigError, match=r"^trainer\.accelerator='gpu' is invalid: No supported gpu"
    ):
        build_trainer(cfg.trainer, None, [])


@pytest.mark.parametrize(
    ("logger", "kind", "folder"),
    [
        # <run>/tensorboard/<settings>: the run's TensorBoard run is named by its overrides.
        ("tensorboard", TensorBoardLogger, "tensorboard/logger=tensorboard"),
        ("csv", CSVLogger, "csv"),
        ("none", None, ""),
    ],
)
def test_logger_options(compose_config, tmp_path, logger, kind, folder) -> None:
    cfg = compose_config("train", [f"logger={logger}"])
    built = build_logger(cfg.get("logger"))
    if kind is None:
        assert built is None
        return
    assert type(built) is kind
    assert Path(built.log_dir) == tmp_path / "run" / folder


def test_callback_options(compose_config, tmp_path) -> None:
    cfg = compose_config("train", ["callbacks=default"])
    callbacks = build_callbacks(cfg.get("callbacks"))
    kinds = {type(c) for c in callbacks}
    # A rich bar and summary on a terminal; epoch log lines and no table in a file or a pipe.
    if stdout_is_terminal():
        assert kinds == {ThrottledCheckpoint, RichProgressBar, RichModelSummary}
    else:
        assert kinds == {ThrottledCheckpoint, EpochLines, ModelSummary}
    (last,) = (c for c in callbacks if isinstance(c, ModelCheckpoint))
    # Lightning's checkpoint callback keeps one file, last.ckpt, of a recent epoch (every 5 s).
    assert last.dirpath == str(tmp_path / "run" / "checkpoints")
    assert last.filename == "last" and last.save_top_k == 1 and last.monitor is None
    assert last.save_interval_s == 5
    assert not last.save_last  # no second copy of the same checkpoint
    cfg = compose_config("train", ["callbacks=none"])
    assert build_callbacks(cfg.get("callbacks")) == []
    trainer = build_trainer(cfg.trainer, None, [])
    assert trainer.checkpoint_callbacks == []


def test_debug_fast_is_tiny(compose_config) -> None:
    cfg = compose_config("train", ["debug=fast"])
    assert cfg.trainer.max_epochs == 1
    assert cfg.trainer.limit_train_batches == 4
    assert cfg.grid_size == 100


def test_tutorial_experiment_is_the_final_training_cell(compose_config) -> None:
    # set_seed(2021); net = Net('ReLU()', 2, [128], 4); criterion = nn.CrossEntropyLoss()
    # optimizer = optim.Adam(net.parameters(), lr=1e-3); num_epochs = 100; batch_size = 128
    cfg = compose_config("train", ["experiment=tutorial"])
    check_task_config(cfg)
    assert cfg.seed == 2021 and cfg.data.seed == 2021
    assert cfg.trainer.max_epochs == 100 and cfg.data.batch_size == 128
    assert (cfg.data.num_classes, cfg.data.sigma, cfg.data.points_per_class) == (4, 0.16, 1000)
    assert cfg.data.test_fraction == 0.2 and cfg.data.val_fraction == 0.0
    model = build_model(cfg)
    assert model.net.config() == {
        "activation": "ReLU()",
        "in_features": 2,
        "hidden_units": [128],
        "out_features": 4,
    }
    assert type(model.loss_fn) is nn.CrossEntropyLoss
    optimizer = model.configure_optimizers()
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.param_groups[0]["lr"] == 1e-3
    assert optimizer.param_groups[0]["weight_decay"] == 0.0


def test_defaults(compose_config) -> None:
    cfg = compose_config("train")
    assert cfg.trainer.deterministic is True  # bit-identical reruns unless switched off
    assert cfg.seed == 2021 and cfg.ckpt_path is None
    assert cfg.optimized_metric == "test/acc"
    assert cfg.paths.output_dir == str(Path(cfg.paths.log_dir) / "run")


def test_eval_config_composes(compose_config, tmp_path) -> None:
    cfg = compose_config("eval", [f"ckpt_path={tmp_path}/last.ckpt"])
    assert cfg.task_name == "eval"
    assert cfg.get("loss") is None  # the checkpoint's own loss
    with pytest.raises(ConfigError, match="no such file"):  # checked before any work
        validate_eval_config(cfg)
    (tmp_path / "last.ckpt").write_bytes(b"")
    assert validate_eval_config(cfg) == tmp_path / "last.ckpt"
    cfg = compose_config("eval", ["ckpt_path=x.ckpt", "loss=torch_ce"])
    assert cfg.loss._target_ == "torch.nn.CrossEntropyLoss"
