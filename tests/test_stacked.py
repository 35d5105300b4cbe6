"""Stacked sweeps: many configurations of one network trained as one stacked LightningModule.

Oracles: real single runs (the same sweep run with Hydra's basic launcher, each job an
``mlplab-train`` run), a plain PyTorch loop per member, ``mlplab-eval`` on a member's checkpoint,
and ``mlplab-report`` of both sweeps.
"""

from __future__ import annotations

import functools
import json
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from setuptools import find_namespace_packages
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import api_pb2
from torch import nn
from torch.nn import functional as F

from conftest import SMALL_TRAIN, read_metrics, run_cli
from mlplab.data.datamodule import epoch_seed
from mlplab.data.spiral import make_spiral, shuffle_split
from mlplab.data.stacked import StackedDataModule, StackedEpochOrder
from mlplab.models.losses import CrossEntropy
from mlplab.models.mlp import MLP
from mlplab.models.stacked import (
    BatchedLinear,
    StackedClassifier,
    StackedMLP,
    StackMismatchError,
    default_chunk_size,
    stacked_loss,
)
from mlplab.report import load_sweep
from mlplab.tasks import dashboard, stacked
from mlplab.tasks.common import CONF_DIR, ROOT_DIR

QUIET = ["callbacks.rich_progress_bar=null", "callbacks.model_summary=null"]
ONE_EPOCH = [*SMALL_TRAIN, "trainer.max_epochs=1", *QUIET]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the relative distance of two weight tensors."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def sweep_dir_of(log_dir: Path) -> Path:
    (sweep,) = (Path(log_dir) / "train" / "multiruns").iterdir()
    return sweep


def jobs_of(sweep: Path) -> list[Path]:
    jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(jobs, key=lambda p: int(p.name))


def checkpoint(job: Path) -> dict:
    return torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def tensorboard_run_of(job: Path) -> Path:
    """A sweep job's TensorBoard run: ``<sweep>/tensorboard/<name of its settings>``, the settings
    being the ``hydra.job.override_dirname`` its ``.hydra/hydra.yaml`` records."""
    hydra_cfg = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
    run = job.parent / "tensorboard" / dashboard.run_name(hydra_cfg["job"]["override_dirname"])
    assert run.is_dir(), run
    return run


def events_of(job: Path) -> list[ea.EventAccumulator]:
    """Every event file of the job's TensorBoard run, read whole."""
    accumulators = []
    for path in sorted(tensorboard_run_of(job).glob("events.out.tfevents.*")):
        acc = ea.EventAccumulator(str(path), size_guidance={ea.SCALARS: 0})
        acc.Reload()
        accumulators.append(acc)
    return accumulators


def scalars_of(job: Path) -> dict[str, list[tuple[int, float]]]:
    scalars: dict[str, list[tuple[int, float]]] = {}
    for acc in events_of(job):
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return scalars


def hparams_of(job: Path) -> tuple[dict, int | None]:
    """The job's HPARAMS session: its hyper-parameters (session start) and end status."""
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    hparams: dict = {}
    status = None
    for acc in events_of(job):
        try:
            content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
        except KeyError:
            continue
        if metadata.SESSION_START_INFO_TAG in content:
            start = plugin_data_pb2.HParamsPluginData.FromString(
                content[metadata.SESSION_START_INFO_TAG]
            )
            hparams = {
                key: getattr(value, value.WhichOneof("kind"))
                for key, value in start.session_start_info.hparams.items()
            }
        if metadata.SESSION_END_INFO_TAG in content:
            end = plugin_data_pb2.HParamsPluginData.FromString(
                content[metadata.SESSION_END_INFO_TAG]
            )
            status = end.session_end_info.status
    return hparams, status


def report_of(sweep: Path, columns: list[str]) -> pd.DataFrame:
    """``load_sweep``'s settings and status columns of a sweep, one row per job."""
    return load_sweep(sweep)[columns]


# --- the science layer -------------------------------------------------------------------------


def test_stacked_mlp_is_each_member_alone():
    torch.manual_seed(0)
    nets = [MLP("LeakyReLU(0.1)", 2, [16, 8], 4) for _ in range(5)]
    x = torch.randn(5, 32, 2)
    expected = torch.stack([net(x[m]) for m, net in enumerate(nets)])
    for blocks, chunk in (([5], None), ([2, 3], None), ([1, 1, 3], 2)):
        stack = StackedMLP(nets, blocks, chunk)
        torch.testing.assert_close(stack(x), expected, rtol=1e-6, atol=1e-6)
        for m, net in enumerate(nets):
            for key, value in net.state_dict().items():
                assert torch.equal(stack.member_state_dict(m)[key], value)
    with pytest.raises(ValueError, match="not an MLP like member 0"):
        StackedMLP([nets[0], MLP("ReLU()", 2, [16, 8], 4)])
    with pytest.raises(ValueError, match="cannot be stacked"):
        StackedMLP([MLP("PReLU()", 2, [4], 4)])


def test_default_chunks_hold_about_a_mebibyte_of_activations_on_cpus_only():
    assert default_chunk_size(128, 128, "cpu") == 16  # 16 x 128 x 128 floats = 1 MiB
    assert default_chunk_size(32, 16, "cpu") == 512
    assert default_chunk_size(4096, 4096, "cpu") == 1
    assert default_chunk_size(128, 128, "cuda") is None


def test_batched_linear_gradients():
    torch.manual_seed(1)
    for in_f, out_f in ((2, 7), (7, 3), (5, 5)):
        x = torch.randn(3, 6, in_f, dtype=torch.float64, requires_grad=True)
        w = torch.randn(3, out_f, in_f, dtype=torch.float64, requires_grad=True)
        b = torch.randn(3, out_f, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(BatchedLinear.apply, (x, w, b))
        expected = torch.stack([F.linear(x[m], w[m], b[m]) for m in range(3)])
        torch.testing.assert_close(BatchedLinear.apply(x, w, b), expected)


@pytest.mark.parametrize("loss", [CrossEntropy(), nn.CrossEntropyLoss(), nn.MultiMarginLoss()])
def test_stacked_loss_is_each_members_loss(loss):
    torch.manual_seed(2)
    logits, labels = torch.randn(4, 9, 3) * 5, torch.randint(0, 3, (4, 9))
    expected = torch.stack([loss(logits[m], labels[m]) for m in range(4)])
    torch.testing.assert_close(stacked_loss(loss)(logits, labels), expected)


def test_each_member_sees_its_single_run_batch_order():
    order = StackedEpochOrder(10, seeds=[3, 5, 3], batch_size=4)
    for epoch in (0, 7):
        order.set_epoch(epoch)
        steps = list(order)
        assert [s.shape for s in steps] == [(3, 4), (3, 4), (3, 2)]  # the last one smaller
        got = torch.cat(steps, dim=1)
        for m, seed in enumerate([3, 5, 3]):
            generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
            assert torch.equal(got[m], torch.randperm(10, generator=generator))
    # On a resume Lightning creates the iterator first and sets the epoch after.
    steps = iter(order)
    order.set_epoch(2)
    generator = torch.Generator().manual_seed(epoch_seed(3, 2))
    assert torch.equal(next(steps)[0], torch.randperm(10, generator=generator)[:4])


def spiral(seed: int, points: int = 50) -> dict[str, torch.Tensor]:
    X, y = make_spiral(4, 0.16, points, generator=torch.Generator().manual_seed(seed))
    X_train, y_train, X_test, y_test = shuffle_split(X, y, 0.2, seed)
    return {
        "X_train": X_train,
        "y_train": y_train,
        "X_val": X_train[:0],
        "y_val": y_train[:0],
        "X_test": X_test,
        "y_test": y_test,
    }


def plain_loop(net: MLP, data: dict, seed: int, optimizer: torch.optim.Optimizer, epochs: int):
    """The single run's training in plain PyTorch: (seed, epoch) order, minibatches of 16."""
    losses = []
    n = len(data["X_train"])
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
        for idx in order.split(16):
            loss = F.cross_entropy(net(data["X_train"][idx]), data["y_train"][idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def fit_stack(nets, optimizers, datas, seeds, epochs=1, loss=None):
    model = StackedClassifier(nets, loss or nn.CrossEntropyLoss(), optimizers, num_classes=4)
    data = StackedDataModule(datas, seeds, batch_size=16)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    return model


def test_per_member_optimizer_settings_are_honoured():
    """lr and weight decay per member; a member with lr 0 keeps its initial weights."""
    settings = [{"lr": 0.01}, {"lr": 0.0}, {"lr": 0.003, "weight_decay": 0.1}, {"lr": 0.01}]
    seeds = [1, 2, 3, 4]
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        nets.append(MLP("Tanh()", 2, [16], 4))
    initial = [{k: v.clone() for k, v in net.state_dict().items()} for net in nets]
    factories = [functools.partial(torch.optim.Adam, **kw) for kw in settings]
    datas = [spiral(seed) for seed in seeds]
    model = fit_stack(nets, factories, datas, seeds, epochs=2)
    assert len(model.configure_optimizers().param_groups) == 4  # runs of equal settings
    for m, (seed, kwargs) in enumerate(zip(seeds, settings, strict=True)):
        state = model.net.member_state_dict(m)
        if kwargs["lr"] == 0:
            for key, value in initial[m].items():
                assert torch.equal(state[key], value), key
            continue
        alone = MLP("Tanh()", 2, [16], 4)
        alone.load_state_dict(initial[m])
        optimizer = torch.optim.Adam(alone.parameters(), **kwargs)
        losses = plain_loop(alone, datas[m], seed, optimizer, epochs=2)
        for key, value in alone.state_dict().items():
            assert relative_error(state[key], value) < 1e-5, (m, key)
        assert model.member_history(m)["step/loss"].tolist() == pytest.approx(losses, rel=1e-5)
        # The member's optimizer state, as its single run's optimizer would save it.
        saved = model.member_optimizer_state(m, model.net.member(m))
        expected = optimizer.state_dict()
        assert saved["param_groups"] == expected["param_groups"]
        for i, state_i in expected["state"].items():
            assert float(saved["state"][i]["step"]) == float(state_i["step"])
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(
                    saved["state"][i][key], state_i[key], rtol=1e-4, atol=1e-9
                )


def test_a_diverging_member_fails_alone_in_the_stack():
    seeds = [1, 2, 3]
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        nets.append(MLP("ReLU()", 2, [16], 4))
    initial = [{k: v.clone() for k, v in net.state_dict().items()} for net in nets]
    lrs = [0.1, 1e30, 0.05]
    factories = [functools.partial(torch.optim.SGD, lr=lr, momentum=0.9) for lr in lrs]
    datas = [spiral(seed) for seed in seeds]
    model = fit_stack(nets, factories, datas, seeds, epochs=2)
    assert list(model.failures) == [1]
    assert "training diverged; lower optimizer.lr (now 1e+30)" in model.failures[1]
    assert model.failed_step[1] < 10  # in the first epoch's 10 steps
    for m in (0, 2):
        alone = MLP("ReLU()", 2, [16], 4)
        alone.load_state_dict(initial[m])
        optimizer = torch.optim.SGD(alone.parameters(), lr=lrs[m], momentum=0.9)
        plain_loop(alone, datas[m], seeds[m], optimizer, epochs=2)
        for key, value in alone.state_dict().items():
            assert relative_error(model.net.member_state_dict(m)[key], value) < 1e-5


def test_distinct_datasets_are_held_once():
    datas = [spiral(1), spiral(2), spiral(1)]
    data = StackedDataModule(datas, [1, 2, 1], batch_size=16, keys=["a", "b", "a"])
    assert data.num_datasets == 2
    x, y = next(iter(data.train_dataloader()))
    assert torch.equal(x[0], x[2]) and not torch.equal(x[0], x[1])
    order = torch.randperm(160, generator=torch.Generator().manual_seed(epoch_seed(2, 0)))
    assert torch.equal(x[1], datas[1]["X_train"][order[:16]])
    assert torch.equal(y[1], datas[1]["y_train"][order[:16]])


def test_a_checkpoint_of_other_members_is_refused():
    nets = [MLP("ReLU()", 2, [4], 4) for _ in range(2)]
    factories = [functools.partial(torch.optim.Adam, lr=0.01)] * 2
    saved = StackedClassifier(nets, CrossEntropy(), factories, 4, member_ids=["a", "b"])
    record: dict = {}
    saved.on_save_checkpoint(record)
    other = StackedClassifier(nets, CrossEntropy(), factories, 4, member_ids=["a", "c"])
    with pytest.raises(StackMismatchError, match="saved for other members"):
        other.on_load_checkpoint(record)
    three = StackedClassifier([*nets, nets[0]], CrossEntropy(), [*factories, factories[0]], 4)
    with pytest.raises(StackMismatchError, match="holds 2 members"):
        three.on_load_checkpoint(record)


# --- which jobs stack ---------------------------------------------------------------------------


def resolved(cfg):
    """A composed config as the launcher hands it to mlplab.tasks.stacked: resolved, no hydra."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return OmegaConf.create(container)


def why_alone(cfg, tmp_path: Path) -> str | None:
    """Why the launcher runs a job alone: from its config, else once its run is built."""
    reason = stacked.why_not_stackable(cfg)
    if reason is not None:
        return reason
    return stacked.build_member(stacked.Member(0, cfg, tmp_path / "run"))


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ([], None),
        (["data=rings"], None),
        (["model.activation='PReLU()'"], "has parameters or randomness"),
        (["model.activation='RReLU()'"], "has parameters or randomness"),
        (["model._target_=torch.nn.Identity"], "(Identity) is not an mlplab MLP"),
        (["optimizer._target_=torch.optim.Adafactor"], "cannot be stacked"),
        (["scheduler=cosine"], "is stepped per run"),
        (["trainer.devices=2"], "a stack runs on one device"),
        (["trainer.precision=bf16-mixed"], "a stack trains at 32 or 64 bits"),
        (["ckpt_path=<tmp>/last.ckpt"], "resumes one run"),  # a file that exists
        (["+trainer.gradient_clip_val=1.0"], "would mix the members' gradients"),
        (["callbacks.model_checkpoint.monitor=train/loss"], "best checkpoints are kept per run"),
        (["callbacks.model_checkpoint.filename=epoch"], "other checkpoints than last.ckpt"),
        (
            ["+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping"],
            "would see the whole stack",
        ),
    ],
)
def test_why_a_job_runs_alone(compose_config, tmp_path, overrides, why):
    (tmp_path / "last.ckpt").write_bytes(b"")  # only its existence is checked up front
    overrides = [o.replace("<tmp>", str(tmp_path)) for o in overrides]
    reason = why_alone(resolved(compose_config("train", overrides)), tmp_path)
    assert (reason is None) if why is None else (why in reason), reason


def test_invalid_and_other_task_jobs_run_alone(compose_config, tmp_path):
    reason = why_alone(resolved(compose_config("train", ["model.width=0"])), tmp_path)
    assert reason == "its config is invalid (model.width=0 is invalid: must be an integer >= 1)"
    reason = why_alone(resolved(compose_config("train", ["seed=-1"])), tmp_path)
    assert reason == (
        "its config is invalid (seed=-1 is invalid: must be an integer >= 0 and <= 4294967295)"
    )
    cfg = resolved(compose_config("train"))
    cfg.task_name = "eval"
    assert stacked.why_not_stackable(cfg) == "task 'eval' is not mlplab-train"
    member = stacked.Member(0, resolved(compose_config("train")), tmp_path / "run")
    assert stacked.why_not_stackable(member.cfg) is None
    assert stacked.build_member(member) is None and member.run is not None


def test_jobs_stack_when_only_seed_and_optimizer_settings_differ(compose_config, tmp_path):
    def key(*overrides: str) -> str:
        return stacked.stack_key(resolved(compose_config("train", overrides)), tmp_path / "run")

    first = key()
    assert "<output_dir>" in first and str(tmp_path / "run") not in first
    same = [["seed=5"], ["optimizer.lr=0.5"], ["optimizer.weight_decay=0.1", "seed=9"]]
    for overrides in same:
        assert key(*overrides) == first, overrides
    other = [["model.width=8"], ["data.batch_size=64"], ["optimizer=sgd"], ["trainer.max_epochs=3"]]
    for overrides in other:
        assert key(*overrides) != first, overrides


def test_the_launcher_is_a_hydra_plugin_in_the_namespace_package():
    assert not (ROOT_DIR / "src" / "hydra_plugins" / "__init__.py").exists()
    assert "hydra_plugins.mlplab_stacked_launcher" in find_namespace_packages(ROOT_DIR / "src")
    GlobalHydra.instance().clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a conf/ file merged into the plugin's schema
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", ["hydra/launcher=stacked"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("mlplab_stacked_launcher.stacked_launcher.StackedLauncher")
    assert launcher.max_members is None and launcher.chunk_size is None


# --- real sweeps: stacked against the basic launcher --------------------------------------------

# 2 widths x 2 seeds x 2 learning rates: two stacks of four members with two param groups each.
GRID = ["model.width=8,16", "seed=1,2", "optimizer.lr=0.01,0.002"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, Path]:
    """The same one-epoch sweep run with the basic launcher (single runs) and stacked."""
    out = {}
    for launcher in ("basic", "stacked"):
        log_dir = tmp_path_factory.mktemp(launcher) / "logs"
        log_dir.mkdir()
        result = run_cli(
            "train",
            "-m",
            f"hydra/launcher={launcher}",
            *ONE_EPOCH,
            *GRID,
            f"paths.log_dir={log_dir}",
            cwd=log_dir.parent,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        out[launcher] = sweep_dir_of(log_dir)
        if launcher == "stacked":
            # Each job composed once: the launcher takes the configs the sweeper composed.
            log = result.stdout + result.stderr
            assert "Composed 8 jobs in" in log
            assert "(8 as the sweeper composed them to validate them)" in log
    return out


@pytest.mark.slow
@pytest.mark.subprocess
def test_stacked_jobs_equal_their_single_runs(sweeps):
    single, stack = jobs_of(sweeps["basic"]), jobs_of(sweeps["stacked"])

    def as_stacked(text: str) -> str:  # the basic sweep's folders named as the stacked one's
        text = text.replace(str(sweeps["basic"]), str(sweeps["stacked"]))
        return text.replace(str(sweeps["basic"].parents[2]), str(sweeps["stacked"].parents[2]))

    assert [j.name for j in stack] == [str(i) for i in range(8)] == [j.name for j in single]
    groups = sorted((sweeps["stacked"] / ".stacked").iterdir())
    assert len(groups) == 2  # one stack per width
    for group in groups:
        record = json.loads((group / "stack.json").read_text())
        assert len(record["jobs"]) == 4 and record["param_groups"] == 2
        assert (group / "checkpoints" / "last.ckpt").is_file()
    for a, b in zip(stack, single, strict=True):
        got, want = read_metrics(a), read_metrics(b)
        assert got["status"] == want["status"] == "ok"
        assert got["output_dir"] == str(a)
        assert got["overrides"] == json.loads(as_stacked(json.dumps(want["overrides"])))
        assert got["metrics"].keys() == want["metrics"].keys()
        assert got["hparams"] == want["hparams"]
        for key, value in want["metrics"].items():
            if key != "fit_time_s":
                assert got["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-4), key
        # After one epoch, the weights of the single run within float tolerance.
        ca, cb = checkpoint(a), checkpoint(b)
        assert ca["state_dict"].keys() == cb["state_dict"].keys()
        for key, value in cb["state_dict"].items():
            assert relative_error(ca["state_dict"][key], value) < 1e-5, (a.name, key)
        assert ca.keys() - {"callbacks"} == cb.keys() - {"callbacks"}
        for key in ("epoch", "global_step", "loops", "hparams_name", "lr_schedulers"):
            assert ca[key] == cb[key], key
        # What built the run, which mlplab-eval and a resume rebuild.
        assert ca["hyper_parameters"] == cb["hyper_parameters"]
        assert ca["datamodule_hyper_parameters"] == cb["datamodule_hyper_parameters"]
        torch.testing.assert_close(
            ca["mlplab"]["training_losses"], cb["mlplab"]["training_losses"], rtol=1e-5, atol=0
        )
        (opt_a,), (opt_b,) = ca["optimizer_states"], cb["optimizer_states"]
        assert opt_a["param_groups"] == opt_b["param_groups"]  # the member's own lr
        # Hydra's records of the job, TensorBoard scalars and HPARAMS, figures.
        for name in ("config.yaml", "overrides.yaml"):
            assert yaml.safe_load((a / ".hydra" / name).read_text()) == yaml.safe_load(
                as_stacked((b / ".hydra" / name).read_text())
            )
        assert (a / "train.log").is_file()
        sa, sb = scalars_of(a), scalars_of(b)
        for tag in ("train/loss_step", "train/acc_step", "train/loss", "train/acc", "test/acc"):
            assert [s for s, _ in sa[tag]] == [s for s, _ in sb[tag]], tag
            assert [v for _, v in sa[tag]] == pytest.approx([v for _, v in sb[tag]], abs=1e-4)
        assert tensorboard_run_of(a).name == tensorboard_run_of(b).name
        hparams, status = hparams_of(a)
        assert (hparams, status) == hparams_of(b)
        assert status == api_pb2.STATUS_SUCCESS
        # The job's settings are HPARAMS columns, as every single run's.
        assert hparams["optimizer/lr"] == read_metrics(a)["hparams"]["optimizer/lr"]
        assert {"model/width", "seed", "optimizer/lr", "trainer/max_epochs"} <= hparams.keys()
        for name in ("decision_map.png", "training_loss.png"):
            assert (a / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.subprocess
def test_report_of_a_stacked_sweep_equals_the_basic_launchers(sweeps):
    frames = {name: load_sweep(sweep) for name, sweep in sweeps.items()}
    settings = ["job", "status", "model.width", "seed", "optimizer.lr"]
    pd.testing.assert_frame_equal(frames["stacked"][settings], frames["basic"][settings])
    assert (frames["stacked"]["status"] == "ok").all() and len(frames["stacked"]) == 8
    assert list(frames["stacked"].columns) == list(frames["basic"].columns)
    # One TensorBoard run per job in the sweep's folder, named by the job's settings.
    runs = {n: sorted(p.name for p in (s / "tensorboard").iterdir()) for n, s in sweeps.items()}
    assert runs["stacked"] == runs["basic"] and len(runs["stacked"]) == 8


@pytest.mark.slow
@pytest.mark.subprocess
def test_eval_of_a_members_checkpoint_reproduces_its_metrics(sweeps, tmp_path):
    for job in jobs_of(sweeps["stacked"])[:2]:
        result = run_cli(
            "eval",
            f"ckpt_path={job / 'checkpoints' / 'last.ckpt'}",
            f"paths.log_dir={tmp_path / job.name}",
            "figures=false",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        (run,) = (tmp_path / job.name / "eval" / "runs").iterdir()
        got, want = read_metrics(run)["metrics"], read_metrics(job)["metrics"]
        for key in ("test/acc", "test/loss"):
            assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-6), key


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_single_run_resumes_a_members_checkpoint_as_its_own(sweeps, tmp_path):
    """last.ckpt of a stacked job and of its single run, each resumed by mlplab-train."""
    job = "5"  # model.width=16, seed=1, optimizer.lr=0.002 (the last key varies fastest)
    overrides = read_metrics(sweeps["basic"] / job)["overrides"]
    overrides = [o for o in overrides if not o.startswith(("trainer.max_epochs", "paths."))]
    got = {}
    for name, sweep in sweeps.items():
        result = run_cli(
            "train",
            *overrides,
            "trainer.max_epochs=2",
            "figures=false",
            f"ckpt_path={sweep / job / 'checkpoints' / 'last.ckpt'}",
            f"hydra.run.dir={tmp_path / name}",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        got[name] = read_metrics(tmp_path / name)["metrics"]
        assert got[name]["epochs"] == 2
    for key in ("test/acc", "test/loss", "train/acc", "train/loss"):
        assert got["stacked"][key] == pytest.approx(got["basic"][key], rel=1e-4, abs=1e-4), key
    assert got["stacked"]["global_step"] == got["basic"]["global_step"] == 20
    a, b = checkpoint(tmp_path / "stacked"), checkpoint(tmp_path / "basic")
    for key, value in b["state_dict"].items():
        assert relative_error(a["state_dict"][key], value) < 1e-5, key
    assert a["loops"] == b["loops"]  # Lightning's loop state: the stack's is the single run's


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_diverging_member_and_invalid_jobs_fail_alone_as_in_single_runs(tmp_path):
    # Width 0 is refused before training (those jobs run alone); lr 1e30 diverges in the stack.
    args = ["optimizer=sgd", "optimizer.lr=0.1,1e30", "seed=1,2", "model.width=16,0"]
    results = {}
    for launcher in ("basic", "stacked"):
        log_dir = tmp_path / launcher
        log_dir.mkdir()
        result = run_cli(
            "train",
            "-m",
            f"hydra/launcher={launcher}",
            *SMALL_TRAIN,
            *QUIET,
            "figures=false",
            "trainer.max_epochs=2",
            *args,
            f"paths.log_dir={log_dir}",
            cwd=tmp_path,
        )
        assert result.returncode == 1, result.stderr[-3000:]
        results[launcher] = sweep_dir_of(log_dir)
    for a, b in zip(jobs_of(results["stacked"]), jobs_of(results["basic"]), strict=True):
        got, want = read_metrics(a), read_metrics(b)
        assert got["status"] == want["status"], a.name
        assert got["error"] == want["error"], a.name
        if want["status"] == "failed":
            assert got["metrics"] == {}
            assert not (a / "checkpoints" / "last.ckpt").exists()
    statuses = [read_metrics(j)["status"] for j in jobs_of(results["stacked"])]
    assert statuses.count("ok") == 2 and statuses.count("failed") == 6
    diverged = [read_metrics(j)["error"] or "" for j in jobs_of(results["stacked"])]
    assert sum("training diverged" in e for e in diverged) == 2
    settings = ["job", "status", "optimizer.lr", "seed", "model.width", "error"]
    stacked_rows, basic_rows = (report_of(results[k], settings) for k in ("stacked", "basic"))
    pd.testing.assert_frame_equal(stacked_rows, basic_rows)


@pytest.mark.slow
@pytest.mark.subprocess
def test_resume_of_a_stacked_sweep_continues_every_member(tmp_path):
    # Three seeds, at most two per stack: one stack and one job alone.
    args = [*SMALL_TRAIN, *QUIET, "figures=false", "seed=4,5,6", "hydra.launcher.max_members=2"]
    whole = tmp_path / "whole"
    result = run_cli(
        "train",
        "-m",
        "hydra/launcher=stacked",
        *args,
        "trainer.max_epochs=2",
        f"paths.log_dir={whole}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "interrupted"
    for epochs, extra in (("1", []), ("2", ["ckpt_path=last"])):
        result = run_cli(
            "train",
            "-m",
            "hydra/launcher=stacked",
            *args,
            f"trainer.max_epochs={epochs}",
            f"hydra.sweep.dir={sweep}",
            *extra,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        if epochs == "1":
            # As if killed in the middle: a stack writes its jobs' folders only at the end.
            for job in jobs_of(sweep):
                shutil.rmtree(job)
    assert "resuming the stack from" in result.stdout + result.stderr
    for a, b in zip(jobs_of(sweep), jobs_of(sweep_dir_of(whole)), strict=True):
        got, want = read_metrics(a), read_metrics(b)
        assert got["status"] == "ok" and got["metrics"]["global_step"] == 20
        for key in ("test/acc", "test/loss", "train/acc", "train/loss"):
            assert got["metrics"][key] == want["metrics"][key], key
        ca, cb = checkpoint(a), checkpoint(b)
        for key, value in cb["state_dict"].items():
            assert torch.equal(ca["state_dict"][key], value), key
        assert torch.equal(ca["mlplab"]["training_losses"], cb["mlplab"]["training_losses"])
    # Resumed with other data: refused for the stack and for the job alone, as a single run's.
    result = run_cli(
        "train",
        "-m",
        "hydra/launcher=stacked",
        *args,
        "trainer.max_epochs=3",
        "data.sigma=0.2",
        f"hydra.sweep.dir={sweep}",
        "ckpt_path=last",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    for job in jobs_of(sweep):
        record = read_metrics(job)
        assert record["status"] == "failed"
        assert "trained with data.sigma=0.16 but this run has data.sigma=0.2" in record["error"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_tutorial_test_accuracy_within_one_point_of_single_runs(tmp_path):
    """experiment=tutorial's 100 epochs: each member within 1 percentage point of its run."""
    accs = {}
    for launcher in ("basic", "stacked"):
        log_dir = tmp_path / launcher
        log_dir.mkdir()
        result = run_cli(
            "train",
            "-m",
            f"hydra/launcher={launcher}",
            "experiment=tutorial",
            "figures=false",
            "logger=none",
            *QUIET,
            "seed=2021,7",
            f"paths.log_dir={log_dir}",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        accs[launcher] = [
            read_metrics(job)["metrics"]["test/acc"] for job in jobs_of(sweep_dir_of(log_dir))
        ]
    assert accs["basic"][0] == pytest.approx(96.88, abs=0.01)  # the tutorial's own number
    for got, want in zip(accs["stacked"], accs["basic"], strict=True):
        assert abs(got - want) <= 1.0, accs
