"""Optuna search: mlplab's Hydra sweeper (hparams_search=optuna) against real Hydra multiruns, a
real SQLite study and a real optuna-dashboard server.

The multiruns are tiny (debug=fast: one epoch of 4 minibatches), their outputs in tmp folders.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from conftest import BIN, run_cli
from hydra_plugins.mlplab_optuna_sweeper.search_space import params_lines, search_space
from mlplab.models.mlp import parse_activation
from mlplab.tasks.common import CONF_DIR, ConfigError
from mlplab.tasks.train import check_optimized_metric, logged_metrics

TINY = ["debug=fast", "logger=none", "callbacks=none", "figures=false"]
ACTIVATIONS = ["ReLU()", "Tanh()", "LeakyReLU(0.1)"]
STUDY = "mlp_arch"
SPEC = "model.activation"


def compose_train(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def parsed_value(override: str):
    """The value Hydra gives a job for one override line."""
    return OverridesParser.create().parse_override(override).value()


def multirun(log_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    log = f"paths.log_dir={log_dir}"
    return run_cli("train", "-m", "hparams_search=optuna", *args, *TINY, log, cwd=log_dir)


def sweep_dirs(log_dir: Path) -> list[Path]:
    return sorted((log_dir / "train" / "multiruns").iterdir())


def jobs_of(sweep_dir: Path) -> list[dict]:
    """metrics.json of each job folder, in job order."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [json.loads((job / "metrics.json").read_text()) for job in jobs]


def overrides_of(record: dict) -> dict[str, object]:
    """A job's overrides as the values Hydra gave it."""
    return {line.split("=", 1)[0]: parsed_value(line) for line in record["overrides"]}


# --- the config and its search space (no training) --------------------------------------------


def test_optuna_config_searches_lr_width_depth_activation_on_val_acc():
    cfg = compose_train(["hparams_search=optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.mlplab_optuna_sweeper.sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize" and sweeper.storage is None
    assert sweeper.study_name == STUDY and sweeper.n_trials == 20 and sweeper.n_jobs == 2
    assert sweeper.check_config == "mlplab.tasks.train.check_optimized_metric"
    assert cfg.optimized_metric == "val/acc" and cfg.data.val_fraction == 0.2

    space = search_space(params_lines(sweeper.params))
    assert space.distributions == {
        "optimizer.lr": FloatDistribution(1e-4, 0.1, log=True),
        "model.width": CategoricalDistribution([8, 16, 32, 64, 128]),
        "model.depth": CategoricalDistribution([1, 2, 3]),
        "model.activation": CategoricalDistribution(ACTIVATIONS),
    }
    # Each chosen activation goes back to Hydra as text it parses to the spec the model takes.
    for spec in ACTIVATIONS:
        params = {"optimizer.lr": 0.01, "model.width": 8, "model.depth": 2}
        lines = space.overrides({**params, "model.activation": spec})
        assert lines[:3] == ["optimizer.lr=0.01", "model.width=8", "model.depth=2"]
        assert parsed_value(lines[3]) == spec and parse_activation(spec) is not None


def test_search_space_reads_hydras_sweep_grammar_and_writes_overrides_hydra_reads_back():
    params = {
        "a": "interval(0.5, 2)",
        "b": "int(interval(1, 10))",
        "c": "tag(log, interval(1e-3, 1))",
        "d": "range(1, 10, 3)",  # 1, 4, 7: Hydra's range leaves out its stop
        "e": "range(0.1, 1.0, 0.2)",
        "f": "shuffle(range(3))",
        "g": "choice('a b', 'x,y', '1', rings, 2.5, true)",
        "h": 8,  # a plain YAML value is passed to every trial as it is
        "i": None,
    }
    space = search_space([*params_lines(params), "g=x,y", "data=rings", "+extra=1"])
    searched = dict(space.distributions)
    assert sorted(searched.pop("f").choices) == [0, 1, 2]  # shuffled: a choice of its values
    assert searched == {
        "a": FloatDistribution(0.5, 2.0),
        "b": IntDistribution(1, 10),
        "c": FloatDistribution(1e-3, 1.0, log=True),
        "d": IntDistribution(1, 7, step=3),
        "e": FloatDistribution(0.1, 0.9, step=0.2),
        "g": CategoricalDistribution(["x", "y"]),  # the command line's sweep replaces params'
    }
    values = {"a": 1.25, "b": 3, "c": 0.001234, "d": 7, "e": 0.5, "f": 2, "g": "y"}
    lines = space.overrides(values)
    assert lines[7:] == ["h=8", "i=null", "data=rings", "+extra=1"]
    for line, (key, value) in zip(lines, values.items(), strict=False):
        assert line.split("=", 1)[0] == key and parsed_value(line) == value

    # Each choice's text, whatever it holds, is read back by Hydra as that choice.
    grammar = search_space(params_lines({"g": params["g"]}))
    choices = grammar.distributions["g"].choices
    assert choices == ("a b", "x,y", "1", "rings", 2.5, True)
    for choice in choices:
        (line,) = grammar.overrides({"g": choice})
        assert parsed_value(line) == choice and type(parsed_value(line)) is type(choice)
    assert grammar.overrides({"g": "rings"}) == ["g=rings"]
    assert grammar.overrides({"g": "x,y"}) == ["g='x,y'"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a=tag(log, interval(0, 1))", "a=tag(log, interval(0, 1)) is invalid: "),
        ("a=interval(2, 1)", "a=interval(2, 1) is invalid: "),
        ("a=tag(log, choice(1, 2))", "tag(log, ...) applies to interval(low, high) only"),
        ("a=range(5, 1)", "a=range(5, 1) is invalid: the range is empty"),
        ("model=glob(*)", "model=glob(*) is invalid: glob() is not searched"),
    ],
)
def test_search_space_refuses_what_optuna_cannot_search(line, message):
    # SearchSpaceError is a HydraException; caught as that, since Hydra's plugin scan runs the
    # plugin's modules again (new class objects) when a test composes a config.
    with pytest.raises(HydraException) as err:
        search_space([line])
    assert type(err.value).__name__ == "SearchSpaceError"
    assert message in str(err.value) and "\n" not in str(err.value)


def test_logged_metrics_follow_the_config(compose_config):
    assert logged_metrics(compose_config("train")) == [
        "train/loss",
        "train/acc",
        "test/loss",
        "test/acc",
    ]
    with_val = compose_config("train", ["data.val_fraction=0.2"])
    assert logged_metrics(with_val) == [
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "test/loss",
        "test/acc",
    ]
    assert check_optimized_metric(with_val) == "test/acc"  # train.yaml's default
    no_test = compose_config("train", ["data.val_fraction=0.2", "test=false"])
    assert logged_metrics(no_test) == ["train/loss", "train/acc", "val/loss", "val/acc"]
    no_val_loop = compose_config("train", ["data.val_fraction=0.2", "+trainer.limit_val_batches=0"])
    assert "val/acc" not in logged_metrics(no_val_loop)
    # data=rings is another datamodule; it too says whether it has a validation split.
    rings = compose_config("train", ["data=rings", "data.val_fraction=0.1"])
    assert "val/acc" in logged_metrics(rings)

    with pytest.raises(ConfigError) as err:
        check_optimized_metric(compose_config("train", ["optimized_metric=val/acc"]))
    assert str(err.value) == (
        "optimized_metric='val/acc' is invalid: must be one of train/loss, train/acc, test/loss, "
        "test/acc (the metrics this run reports); val/* needs a validation split "
        "(data.val_fraction > 0 for spiral)"
    )


# --- real multiruns ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["optimized_metric=val/accuracy"],
            "optimized_metric='val/accuracy' is invalid: must be one of train/loss, train/acc, "
            "val/loss, val/acc, test/loss, test/acc (the metrics this run reports)",
        ),
        (
            ["optimized_metric=test/acc", "test=false"],
            "optimized_metric='test/acc' is invalid: must be one of train/loss, train/acc, "
            "val/loss, val/acc (the metrics this run reports)",
        ),
        (
            ["hydra.sweeper.direction=max"],
            "hydra.sweeper.direction='max' is invalid: must be one of minimize, maximize",
        ),
        (
            ["optimizer.lr=tag(log, interval(0, 0.1))"],
            "optimizer.lr=tag(log, interval(0, 0.1)) is invalid: ",
        ),
    ],
)
def test_a_bad_search_setting_stops_the_search_before_any_trial(tmp_path, args, line):
    db = tmp_path / "study.db"
    result = multirun(tmp_path, *args, f"hydra.sweeper.storage=sqlite:///{db}")
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [text for text in result.stderr.splitlines() if text.startswith("mlplab-train:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith(f"mlplab-train: error: {line}"), errors[0]
    assert "Traceback" not in result.stderr
    # Nothing ran and nothing was written: no job folder, no study.
    assert not (tmp_path / "train").exists() and not db.exists()


@pytest.mark.slow
@pytest.mark.subprocess
def test_failed_and_diverged_trials_are_failed_in_the_study_and_the_search_goes_on(tmp_path):
    # A brute-force sampler runs each of the 4 combinations once, in its own order: width 0 is
    # refused by the model, lr 1e30 diverges, width 8 with lr 0.1 trains.
    db = tmp_path / "study.db"
    args = [
        "hydra.sweeper.sampler._target_=optuna.samplers.BruteForceSampler",
        "~hydra.sweeper.sampler.n_startup_trials",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=1",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "optimizer=sgd",
        "optimizer.lr=choice(0.1, 1e30)",
        "model.width=choice(0, 8)",
        "model.depth=1",  # fixed on the command line: no longer searched
        "model.activation=ReLU",
    ]
    result = multirun(tmp_path, *args)
    assert result.returncode == 1, result.stderr[-3000:]
    (sweep_dir,) = sweep_dirs(tmp_path)
    records = jobs_of(sweep_dir)
    trials = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}").trials
    assert len(records) == len(trials) == 4
    seen = set()
    for trial, record in zip(trials, records, strict=True):
        job = overrides_of(record)
        assert trial.params == {k: job[k] for k in ("optimizer.lr", "model.width")}
        assert job["model.depth"] == 1 and job["model.activation"] == "ReLU"
        seen.add((job["model.width"], job["optimizer.lr"]))
        assert trial.user_attrs["output_dir"] == record["output_dir"]
        if job["model.width"] == 8 and job["optimizer.lr"] == 0.1:
            assert record["status"] == "ok" and trial.state == TrialState.COMPLETE
            assert trial.value == pytest.approx(record["metrics"]["val/acc"])
        else:
            assert record["status"] == "failed" and trial.state == TrialState.FAIL
            assert trial.value is None and "fail_reason" in trial.user_attrs
            expected = "training diverged" if job["model.width"] == 8 else "model.width=0"
            assert expected in record["error"]
    assert seen == {(0, 0.1), (0, 1e30), (8, 0.1), (8, 1e30)}  # the search went on after each
    summary = [line for line in result.stderr.splitlines() if line.startswith("mlplab: ")]
    assert len(summary) == 1 and summary[0].startswith(f"mlplab: 1 of 4 jobs ok in {sweep_dir}")
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["n_trials"] == 4 and best["complete"] == 1 and best["failed"] == 3
    assert best["best_params"] == {"optimizer.lr": 0.1, "model.width": 8}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def dashboard_trials(storage: str) -> tuple[dict, dict]:
    """Start ``optuna-dashboard <storage>`` on a free port of 127.0.0.1, read its API, stop it.

    Returns:
        The study's summary from ``/api/studies`` and its detail from ``/api/studies/<id>``
        (the routes of optuna-dashboard's ``_app.py``).
    """
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "optuna-dashboard"), storage, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                (summary,) = get_json(f"{url}/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "optuna-dashboard did not answer in 60 s"
                time.sleep(0.3)
        return summary, get_json(f"{url}/api/studies/{summary['study_id']}")
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_resumed_study_proposes_new_parameters_and_opens_in_optuna_dashboard(tmp_path):
    # The README's resume: the same command twice, 2 trials each, with one SQLite storage.
    storage = f"sqlite:///{tmp_path / 'db' / 'study.db'}"  # its folder does not exist yet
    args = ["hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}"]
    results = [multirun(tmp_path, *args) for _ in range(2)]
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "setup plugin alembic" not in result.stdout + result.stderr
    first, second = (jobs_of(d) for d in sweep_dirs(tmp_path))
    assert len(first) == len(second) == 2
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    # Each trial is the job that ran it: its parameters and its value (val/acc of that job).
    for trial, record in zip(study.trials, first + second, strict=True):
        assert trial.params == {k: v for k, v in overrides_of(record).items() if k in trial.params}
        assert set(trial.params) == {"optimizer.lr", "model.width", "model.depth", SPEC}
        assert trial.value == pytest.approx(record["metrics"]["val/acc"])
        assert 1e-4 <= trial.params["optimizer.lr"] <= 0.1
    old = [t.params for t in study.trials[:2]]
    assert all(t.params not in old for t in study.trials[2:])
    old_lrs = {p["optimizer.lr"] for p in old}
    assert not {t.params["optimizer.lr"] for t in study.trials[2:]} & old_lrs
    output = results[1].stderr + results[1].stdout
    assert "the study holds 2 trials: sampler seed 2021 + 2, for new parameters" in output
    # A validation split of 20 % of the 3200 training points: 640 validation, 2560 trained on.
    assert "Accuracy on the 2560 training samples" in results[0].stdout
    # optimization_results.yaml of the second command: the best of all four trials.
    best = yaml.safe_load((sweep_dirs(tmp_path)[1] / "optimization_results.yaml").read_text())
    assert best["n_trials"] == 4 and best["best_value"] == pytest.approx(study.best_value)
    assert best["best_params"] == study.best_params
    # The log line gives the best trial's settings as overrides, floats to 6 significant digits.
    best_params = " ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in study.best_params.items()
    )
    value = f"{study.best_value:.6g}"
    assert f"best: trial {study.best_trial.number}, value {value}, {best_params}" in output

    # The same study, read back through a real optuna-dashboard server's HTTP API.
    summary, detail = dashboard_trials(storage)
    assert summary["study_name"] == STUDY and summary["directions"] == ["maximize"]
    served = detail["trials"]
    assert [t["number"] for t in served] == [0, 1, 2, 3]
    for trial, shown in zip(study.trials, served, strict=True):
        assert shown["state"] == "Complete" and shown["values"] == [trial.value]
        params = {p["name"]: p["param_external_value"] for p in shown["params"]}
        assert params == {name: str(value) for name, value in trial.params.items()}
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        assert attrs["output_dir"] == trial.user_attrs["output_dir"]
    assert detail["best_trials"][0]["number"] == study.best_trial.number
    assert math.isclose(detail["best_trials"][0]["values"][0], study.best_value)


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_report_of_a_study_scatters_the_metric_against_each_searched_setting(tmp_path):
    """mlplab-report on an Optuna sweep: its trials are not a grid, so one scatter panel per
    searched key (lr on a log axis when it spans more than a decade), the best trial marked, the
    chance line; no line or heatmap figure over "swept values"."""
    from mlplab.report import is_grid, load_sweep, swept_keys
    from mlplab.tasks.report import expected_jobs, make_report

    result = multirun(tmp_path, "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = sweep_dirs(tmp_path)
    # No metric given: the study's own objective (val/acc, maximize), never test/acc.
    report = run_cli("report", str(sweep_dir), f"paths.log_dir={tmp_path}",
                     cwd=tmp_path)  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    pngs = sorted(p.name for p in sweep_dir.glob("*.png"))
    assert pngs == ["val_acc_vs_settings.png"]
    assert (sweep_dir / "val_acc_vs_settings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](val_acc_vs_settings.png)" in (sweep_dir / "summary.md").read_text()

    # The figure itself, drawn from the same folder.
    from mlplab.report import sweep_figures

    frame = load_sweep(sweep_dir, expected_jobs(sweep_dir))
    keys = swept_keys(frame)
    assert set(keys) == {"optimizer.lr", "model.width", "model.depth", SPEC}
    assert not is_grid(frame, keys)
    assert make_report(sweep_dir, metric="val/acc", figures=False)["jobs/ok"] == 6
    fig = sweep_figures(frame, "val/acc")["val_acc_vs_settings"]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    panels = {ax.get_xlabel(): ax for ax in axes}
    assert set(panels) == {
        "learning rate", "width (units per hidden layer)", "depth (hidden layers)", "activation",
    }  # fmt: skip
    records = jobs_of(sweep_dir)
    accs = [r["metrics"]["val/acc"] for r in records]
    lrs = [overrides_of(r)["optimizer.lr"] for r in records]
    assert max(lrs) / min(lrs) > 10  # the seeded sampler's six rates span over a decade
    lr = panels["learning rate"]
    assert lr.get_xscale() == "log"
    assert panels["depth (hidden layers)"].get_xscale() == "linear"
    jobs, best = lr.collections[:2]  # every job, then the ring round the best
    assert jobs.get_offsets()[:, 0].tolist() == pytest.approx(lrs)
    assert jobs.get_offsets()[:, 1].tolist() == pytest.approx(accs)
    top = max(range(6), key=accs.__getitem__)
    assert best.get_offsets().tolist() == [pytest.approx([lrs[top], accs[top]])]
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[1].startswith(f"best: job {top} (")
    assert texts[2] == "chance (1/4 = 25 %)"
    # Activations are categories, ticked with their specs; every panel shares the accuracy axis.
    ticks = [t.get_text() for t in panels["activation"].get_xticklabels()]
    assert set(ticks) <= set(ACTIVATIONS) and len(ticks) == len(
        {overrides_of(r)[SPEC] for r in records}
    )
    assert {ax.get_ylim() for ax in axes} == {lr.get_ylim()}
