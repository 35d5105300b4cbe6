"""mlplab-eval: a training checkpoint re-evaluated gives the training run's test numbers exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

from conftest import NO_PROGRESS, SMALL_TRAIN, read_metrics
from mlplab.tasks.common import run_task
from mlplab.tasks.eval import _eval_body
from mlplab.tasks.train import _train_body

SMALL = [*SMALL_TRAIN, *NO_PROGRESS]
PNG = b"\x89PNG\r\n\x1a\n"


def run(compose_config, task: str, out: Path, *overrides: str) -> dict:
    """Run a task body through run_task with outputs in ``out``; returns metrics.json."""
    cfg = compose_config(task, list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    body = _train_body if task == "train" else _eval_body
    run_task(cfg, body, output_dir=out, overrides=list(overrides), multirun=False)
    return read_metrics(out)


@pytest.fixture
def trained(compose_config, tmp_path) -> tuple[Path, dict]:
    """A small run trained with nn.CrossEntropyLoss (not the default loss); its ckpt and metrics."""
    out = tmp_path / "train"
    record = run(compose_config, "train", out, *SMALL, "loss=torch_ce", "logger=none", "seed=8")
    assert record["status"] == "ok"
    return out / "checkpoints" / "last.ckpt", record["metrics"]


def test_eval_gives_the_training_runs_test_metrics(compose_config, tmp_path, trained, capsys):
    ckpt, train_metrics = trained
    capsys.readouterr()
    out = tmp_path / "eval"
    record = run(compose_config, "eval", out, f"ckpt_path={ckpt}", "grid_size=40")
    assert record["status"] == "ok"
    metrics = record["metrics"]
    # Same weights, same split, and the loss recorded in the checkpoint: bit-identical numbers.
    assert metrics["test/acc"] == train_metrics["test/acc"]
    assert metrics["test/loss"] == train_metrics["test/loss"]
    # Saved at the end of the second epoch: Lightning's 0-based epoch index 1, after 20 steps.
    assert metrics["checkpoint_epoch"] == 1 and metrics["checkpoint_global_step"] == 20
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"Accuracy on the 80 testing samples: {train_metrics['test/acc']:0.2f}"
    )
    assert (out / "decision_map.png").read_bytes().startswith(PNG)
    images = []
    for events in (out / "tensorboard").rglob("events.out.tfevents.*"):  # /<settings>/events...
        acc = EventAccumulator(str(events), size_guidance={IMAGES: 0})
        acc.Reload()
        images += [(tag, image) for tag in acc.Tags()["images"] for image in acc.Images(tag)]
    ((tag, image),) = images
    assert tag == "figures/decision_map" and image.encoded_image_string.startswith(PNG)


def test_eval_with_another_loss(compose_config, tmp_path, trained) -> None:
    ckpt, train_metrics = trained
    record = run(
        compose_config,
        "eval",
        tmp_path / "eval",
        f"ckpt_path={ckpt}",
        "loss=custom_ce",
        "figures=false",
        "logger=none",
    )
    metrics = record["metrics"]
    assert metrics["test/acc"] == train_metrics["test/acc"]
    # The tutorial's hand-written cross-entropy agrees with PyTorch's to float precision.
    assert metrics["test/loss"] == pytest.approx(train_metrics["test/loss"], rel=1e-6)


def test_eval_of_a_checkpoint_without_a_loss_record(compose_config, tmp_path, trained) -> None:
    ckpt, train_metrics = trained
    checkpoint = torch.load(ckpt, weights_only=True)
    del checkpoint["hyper_parameters"]["built_from"]["loss"]  # a record without the loss
    older = tmp_path / "older.ckpt"
    torch.save(checkpoint, older)
    record = run(compose_config, "eval", tmp_path / "eval", f"ckpt_path={older}", "figures=false")
    assert record["status"] == "ok"
    assert record["metrics"]["test/acc"] == train_metrics["test/acc"]
    assert record["metrics"]["test/loss"] == pytest.approx(train_metrics["test/loss"], rel=1e-6)


def test_eval_needs_a_checkpoint(compose_config, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    with pytest.raises(SystemExit) as stop:
        run(compose_config, "eval", out)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("mlplab-eval: error: ckpt_path='???' is invalid: is required: the path")
    assert read_metrics(out)["status"] == "failed"
    assert not (out / "decision_map.png").exists()


def test_eval_reads_architecture_and_data_from_the_checkpoint(compose_config, tmp_path) -> None:
    # Trained with another width, class count and seed than eval's (absent) model and data.
    out = tmp_path / "train"
    overrides = [*SMALL, "model.width=7", "model.depth=2", "data.num_classes=3", "seed=12"]
    trained = run(compose_config, "train", out, *overrides, "logger=none", "figures=false")
    record = run(
        compose_config,
        "eval",
        tmp_path / "eval",
        f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
        "figures=false",
        "logger=none",
    )
    assert record["metrics"]["test/acc"] == trained["metrics"]["test/acc"]
    assert record["metrics"]["test/loss"] == trained["metrics"]["test/loss"]
