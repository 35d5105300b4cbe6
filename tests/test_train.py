"""mlplab-train: runs through Hydra's compose API and as a real console script.

Oracles: the tutorial's training loop re-implemented in plain PyTorch, the metrics recomputed from
the saved weights, TensorBoard's own event reader, and the tutorial's printed lines.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from torch import Tensor, nn
from torch.nn import functional as F

from conftest import SMALL_TRAIN, checkpoint_of, read_metrics, run_cli, tensorboard_run
from mlplab.data.datamodule import epoch_seed
from mlplab.data.spiral import make_spiral, shuffle_split
from mlplab.models.mlp import MLP
from mlplab.tasks.common import CONF_DIR, run_task
from mlplab.tasks.train import _train_body, build_run

SMALL = SMALL_TRAIN
QUIET = ["logger=none", "callbacks=none", "figures=false"]
PNG = b"\x89PNG\r\n\x1a\n"
TUTORIAL_TRAIN = re.compile(r"^Accuracy on the (\d+) training samples: (\d+\.\d\d)$", re.M)
TUTORIAL_TEST = re.compile(r"^Accuracy on the (\d+) testing samples: (\d+\.\d\d)$", re.M)
FINAL = ("test/acc", "test/loss", "train/acc", "train/loss", "global_step", "epochs")


def fit(compose_config, out: Path, *overrides: str) -> dict:
    """Run ``_train_body`` through run_task, as ``mlplab-train`` would, with outputs in ``out``."""
    cfg = compose_config("train", [*SMALL, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    run_task(cfg, _train_body, output_dir=out, overrides=list(overrides), multirun=False)
    return read_metrics(out)


def net_of(run_dir: Path, width: int = 16) -> MLP:
    net = MLP("ReLU()", 2, [width], 4)
    state = checkpoint_of(run_dir)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    return net


def spiral_split(seed: int, points: int = 100) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The tutorial's data and split: create_spiral_dataset then shuffle_and_split_data."""
    X, y = make_spiral(4, 0.16, points, generator=torch.Generator().manual_seed(seed))
    return shuffle_split(X, y, 0.2, seed)


def assert_same_state(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def read_events(folder: Path) -> tuple[dict, dict, dict]:
    """Scalars, images and hparams plugin content of every event file in ``folder``."""
    kinds = (ea.SCALARS, ea.IMAGES, ea.TENSORS, ea.HISTOGRAMS, ea.AUDIO, ea.COMPRESSED_HISTOGRAMS)
    guidance = dict.fromkeys(kinds, 0)  # 0: keep every event
    scalars: dict[str, list[tuple[int, float]]] = {}
    images: dict[str, list] = {}
    hparams: dict[str, bytes] = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event files in {folder}"
    for path in files:  # Lightning closes its writer after fit and test: one file each
        acc = ea.EventAccumulator(str(path), size_guidance=guidance)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["images"]:
            images.setdefault(tag, []).extend(acc.Images(tag))
        with contextlib.suppress(KeyError):  # KeyError: no hparams entry in this file
            hparams.update(acc.PluginTagToContent("hparams"))
    return scalars, images, hparams


# --- a fast run and what it leaves behind --------------------------------------------------------


def test_fast_run_writes_metrics_figures_and_checkpoint(compose_config, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    record = fit(compose_config, out, "logger=none", "seed=3")
    assert record["status"] == "ok" and record["error"] is None
    metrics = record["metrics"]
    assert {"train/acc", "train/loss", "test/acc", "test/loss"} <= metrics.keys()
    assert metrics["global_step"] == 20 and metrics["epochs"] == 2
    for name in ("decision_map.png", "training_loss.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000
    checkpoint = checkpoint_of(out)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 20  # end of epoch 1 (0-based)
    assert len(checkpoint["mlplab"]["training_losses"]) == 20  # the tutorial's per-batch curve
    # The metrics, recomputed from the saved weights on the tutorial's split.
    X_train, y_train, X_test, y_test = spiral_split(3)
    net = net_of(out).eval()
    with torch.no_grad():
        test_logits, train_logits = net(X_test), net(X_train)
    test_acc = 100.0 * (test_logits.argmax(1) == y_test).double().mean().item()
    train_acc = 100.0 * (train_logits.argmax(1) == y_train).double().mean().item()
    assert metrics["test/acc"] == pytest.approx(test_acc, abs=1e-4)
    assert metrics["train/acc"] == pytest.approx(train_acc, abs=1e-4)
    assert metrics["test/loss"] == pytest.approx(F.cross_entropy(test_logits, y_test).item(), 1e-5)
    assert metrics["train/loss"] == pytest.approx(
        F.cross_entropy(train_logits, y_train).item(), 1e-5
    )
    # The tutorial's two printed lines.
    stdout = capsys.readouterr().out
    assert TUTORIAL_TRAIN.search(stdout).groups() == ("320", f"{metrics['train/acc']:0.2f}")
    assert TUTORIAL_TEST.search(stdout).groups() == ("80", f"{metrics['test/acc']:0.2f}")


def test_seed_2021_gives_the_tutorials_initial_weights(compose_config) -> None:
    # The tutorial: set_seed(2021); net = Net('ReLU()', 2, [128], 4)
    torch.manual_seed(2021)
    tutorial_net = MLP("ReLU()", 2, [128], 4)
    cfg = compose_config("train", ["experiment=tutorial"])
    _, model = build_run(cfg)
    assert_same_state(model.net.state_dict(), tutorial_net.state_dict())


def plain_training_loop(seed: int, epochs: int, width: int = 16) -> nn.Module:
    """The tutorial's training cell in plain PyTorch, batches in mlplab's (seed, epoch) order."""
    X_train, y_train, _, _ = spiral_split(seed)
    torch.manual_seed(seed)
    net = MLP("ReLU()", 2, [width], 4)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(len(X_train), generator=generator)
        for idx in order.split(32):
            optimizer.zero_grad()
            loss = criterion(net(X_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
    return net


@pytest.mark.parametrize("threads", ["1", "2"])
def test_fit_equals_the_plain_pytorch_loop(compose_config, tmp_path, threads) -> None:
    out = tmp_path / "run"
    fit(
        compose_config,
        out,
        "loss=torch_ce",
        "seed=11",
        "logger=none",
        "figures=false",
        f"threads={threads}",
    )
    expected = plain_training_loop(seed=11, epochs=2)
    saved = {k.removeprefix("net."): v for k, v in checkpoint_of(out)["state_dict"].items()}
    assert_same_state(saved, expected.state_dict())


def test_same_seed_same_weights_other_seed_other_weights(compose_config, tmp_path) -> None:
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        record = fit(compose_config, tmp_path / name, f"seed={seed}", "logger=none", "test=true")
        runs[name] = (record["metrics"], checkpoint_of(tmp_path / name))
    (metrics_a, ckpt_a), (metrics_b, ckpt_b), (metrics_c, ckpt_c) = runs.values()
    assert_same_state(ckpt_a["state_dict"], ckpt_b["state_dict"])
    assert ckpt_a["mlplab"]["training_losses"] == ckpt_b["mlplab"]["training_losses"]
    assert {k: metrics_a[k] for k in FINAL} == {k: metrics_b[k] for k in FINAL}
    assert not torch.equal(
        ckpt_a["state_dict"]["net.mlp.Linear_0.weight"],
        ckpt_c["state_dict"]["net.mlp.Linear_0.weight"],
    )
    assert metrics_a["test/loss"] != metrics_c["test/loss"]


# --- TensorBoard, read back with TensorBoard's own reader --------------------------------------


def test_tensorboard_scalars_images_and_hparams(compose_config, tmp_path) -> None:
    out = tmp_path / "run"
    record = fit(
        compose_config,
        out,
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=4",
        "optimizer.lr=0.01",
        "seed=4",
    )
    metrics = record["metrics"]
    losses = checkpoint_of(out)["mlplab"]["training_losses"]
    assert len(losses) == 30
    scalars, images, hparams = read_events(tensorboard_run(out))

    # Per step, every log_every_n_steps optimizer steps, at the step's 0-based index.
    steps = [s for s in range(30) if (s + 1) % 4 == 0]
    assert [s for s, _ in scalars["train/loss_step"]] == steps
    assert [v for _, v in scalars["train/loss_step"]] == pytest.approx(
        [losses[s] for s in steps], abs=1e-6
    )
    # Per epoch, at the epoch's last step: the mean of its steps.
    assert [s for s, _ in scalars["train/loss"]] == [9, 19, 29]
    epoch_means = [sum(losses[10 * e : 10 * e + 10]) / 10 for e in range(3)]
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(epoch_means, abs=1e-5)
    assert [s for s, _ in scalars["train/acc"]] == [9, 19, 29]
    assert all(0.0 <= v <= 100.0 for _, v in scalars["train/acc"])
    # Test metrics once, after training, equal to metrics.json.
    for tag in ("test/acc", "test/loss"):
        assert len(scalars[tag]) == 1, scalars[tag]
        step, value = scalars[tag][0]
        assert step == 30
        assert value == pytest.approx(metrics[tag], abs=1e-6)

    for name in ("decision_map", "training_loss"):
        (image,) = images[f"figures/{name}"]
        assert image.step == 30 and image.width > 100 and image.height > 100
        assert image.encoded_image_string.startswith(PNG)
        # One render: TensorBoard holds the very PNG of the run folder.
        assert image.encoded_image_string == (out / f"{name}.png").read_bytes()

    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    values = {
        key: getattr(value, value.WhichOneof("kind"))
        for key, value in start.session_start_info.hparams.items()
    }
    assert values["model/width"] == 16 and values["model/depth"] == 1
    assert values["model/activation"] == "ReLU()"
    assert values["optimizer/lr"] == pytest.approx(0.01)
    assert values["seed"] == 4 and values["data/batch_size"] == 32
    assert values["trainer/max_epochs"] == 3  # an override without an argument of its own
    end = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_end_info"])
    assert end.session_end_info.status == api_pb2.STATUS_SUCCESS
    # No experiment summary: TensorBoard takes the columns from all runs (test_tensorboard.py).
    assert "_hparams_/experiment" not in hparams


# --- resume -------------------------------------------------------------------------------------


def test_resume_from_last_ckpt_equals_an_uninterrupted_run(compose_config, tmp_path) -> None:
    base = ["seed=9", "logger=none", "figures=false"]
    whole = fit(compose_config, tmp_path / "whole", *base, "trainer.max_epochs=4")
    first = fit(compose_config, tmp_path / "half", *base, "trainer.max_epochs=2")
    assert first["metrics"]["epochs"] == 2
    half_ckpt = tmp_path / "half" / "checkpoints" / "last.ckpt"
    # In a new folder, from the file.
    resumed = fit(
        compose_config,
        tmp_path / "resumed",
        *base,
        "trainer.max_epochs=4",
        f"ckpt_path={half_ckpt}",
    )
    # In the interrupted run's own folder, with ckpt_path=last.
    in_place = fit(
        compose_config, tmp_path / "half", *base, "trainer.max_epochs=4", "ckpt_path=last"
    )
    expected = checkpoint_of(tmp_path / "whole")
    for record, folder in ((resumed, "resumed"), (in_place, "half")):
        assert record["status"] == "ok"
        assert {k: record["metrics"][k] for k in FINAL} == {k: whole["metrics"][k] for k in FINAL}
        got = checkpoint_of(tmp_path / folder)
        assert_same_state(got["state_dict"], expected["state_dict"])
        assert got["mlplab"]["training_losses"] == expected["mlplab"]["training_losses"]
        assert got["global_step"] == 40


# --- bad values of the training issue -----------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("model.width=0", "model.width=0 is invalid: must be an integer >= 1"),
        ("model.depth=-1", "model.depth=-1 is invalid: must be an integer >= 0"),
        ("model.activation='Foo()'", "model.activation='Foo()' is invalid: activation spec"),
        ("data.test_fraction=1.5", "data.test_fraction=1.5 is invalid: must be a number in (0"),
        ("data.batch_size=0", "data.batch_size=0 is invalid: must be an integer >= 1"),
        # The constructors' own messages: torch's optimizer, Lightning's Trainer.
        (
            "optimizer.weight_decay=-0.1",
            "optimizer.weight_decay=-0.1 is invalid: Invalid weight_decay value: -0.1",
        ),
        # optimizer.lr is checked by the task up front (torch's own check of a string is a
        # TypeError about '<=').
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is invalid: must be a number >= 0"),
        ("trainer.max_epochs=-2", "trainer.max_epochs=-2 is invalid: `max_epochs` must be a non-"),
        ("data.num_classes=1", "data.num_classes=1 is invalid: must be an integer >= 2"),
        (
            "callbacks.model_checkpoint=5",
            "callbacks.model_checkpoint=5 is invalid: must be a callback config",
        ),
    ],
)
def test_bad_value_stops_before_training(compose_config, tmp_path, capsys, override, line) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        fit(compose_config, out, override)
    assert stop.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"mlplab-train: error: {line}"), err
    record = read_metrics(out)
    assert record["status"] == "failed" and record["error"] == err[0].split("error: ", 1)[1]
    assert record["error_type"] == "ConfigError"
    assert not (out / "checkpoints").exists() and not (out / "decision_map.png").exists()


# --- the real console script --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_train_then_eval_from_another_folder(tmp_path) -> None:
    logs, elsewhere = tmp_path / "logs", tmp_path / "cwd"
    elsewhere.mkdir()
    train = run_cli("train", "debug=fast", f"paths.log_dir={logs}", cwd=elsewhere)
    assert train.returncode == 0, train.stderr
    assert "Traceback" not in train.stderr and "Warning" not in train.stderr, train.stderr
    (run_dir,) = (logs / "train" / "runs").iterdir()
    record = read_metrics(run_dir)
    assert record["status"] == "ok"
    metrics = record["metrics"]
    assert TUTORIAL_TRAIN.search(train.stdout).groups() == (
        "3200",
        f"{metrics['train/acc']:0.2f}",
    )
    assert TUTORIAL_TEST.search(train.stdout).groups() == ("800", f"{metrics['test/acc']:0.2f}")
    assert metrics["global_step"] == 4  # debug=fast: 4 minibatches
    assert list(elsewhere.iterdir()) == []  # nothing lands in the working directory
    assert train.stdout.splitlines()[-1].endswith(f"run folder: {run_dir}")  # says where

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    evaluation = run_cli(
        "eval", f"ckpt_path={ckpt}", f"paths.log_dir={logs}", "grid_size=50", cwd=elsewhere
    )
    assert evaluation.returncode == 0, evaluation.stderr
    (eval_dir,) = (logs / "eval" / "runs").iterdir()
    evaluated = read_metrics(eval_dir)["metrics"]
    # Same weights, same test split, same loss: the same numbers, bit for bit.
    assert evaluated["test/acc"] == metrics["test/acc"]
    assert evaluated["test/loss"] == metrics["test/loss"]
    assert evaluated["checkpoint_global_step"] == 4
    assert TUTORIAL_TEST.search(evaluation.stdout).groups() == (
        "800",
        f"{metrics['test/acc']:0.2f}",
    )
    assert (eval_dir / "decision_map.png").read_bytes().startswith(PNG)


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_refuses_an_unknown_loss_in_one_line(tmp_path) -> None:
    result = run_cli("train", "loss=foo", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("mlplab-train: error: loss='foo' is invalid: must be one of custom_ce")
    assert line.endswith(f"(the loss/ options in {CONF_DIR})")  # the folder Hydra searched
    assert not (tmp_path / "train").exists()  # refused before Hydra made a run folder
