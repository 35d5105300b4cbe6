"""mlplab-approx: the ReLU construction as a Hydra task, its learned counterpart, its outputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import read_metrics, run_cli, tensorboard_run
from mlplab.approx import TARGETS, evaluate_mlp, fit_relu_mlp, get_target
from mlplab.tasks import common
from mlplab.tasks.approx import _approx_body, parse_bound, validate_approx_config
from mlplab.tasks.common import ConfigError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_approx(compose_config, tmp_path: Path, overrides: list[str]) -> dict:
    """Compose ``approx`` with ``overrides``, run it as a single run, return metrics.json."""
    cfg = compose_config("approx", overrides)
    common.run_task(cfg, _approx_body, output_dir=tmp_path / "run", overrides=[], multirun=False)
    return read_metrics(tmp_path / "run")


def interpolation_max_error(target: str, x_min: float, x_max: float, n: int, m: int) -> float:
    """Oracle: numpy's piecewise-linear interpolant of n points, scored on an m-point grid."""
    f = {"sin": np.sin, "abs": np.abs, "gaussian": lambda x: np.exp(-(x**2))}[target]
    x_train = np.linspace(x_min, x_max, n)
    grid = np.linspace(x_min, x_max, m)
    return float(np.max(np.abs(np.interp(grid, x_train, f(x_train)) - f(grid))))


# --- config parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (0, 0.0),
        (-1.5, -1.5),
        ("pi", math.pi),
        ("2pi", 2 * math.pi),
        ("2*pi", 2 * math.pi),
        ("-pi/2", -math.pi / 2),
        ("0.5 * pi", 0.5 * math.pi),
        ("+3PI", 3 * math.pi),
    ],
)
def test_parse_bound_reads_numbers_and_multiples_of_pi(text, value):
    assert parse_bound(text) == pytest.approx(value, rel=1e-15)


@pytest.mark.parametrize(
    "text",
    ["2 pi pi", "tau", "__import__('os')", "pi/0", "pi**2", "nan", True, [1.0], float("inf")],
)
def test_parse_bound_refuses_everything_else(text):
    with pytest.raises(ValueError, match="multiple of pi"):
        parse_bound(text)


def test_targets_are_an_allowlist_of_elementwise_functions():
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    assert torch.equal(get_target("step")(x), (x >= 0).double())
    assert torch.allclose(get_target("gaussian")(x), torch.exp(-(x**2)))
    assert torch.equal(get_target("cubic")(x), x**3)
    for name, f in TARGETS.items():
        assert f(x).shape == x.shape, name
    with pytest.raises(ValueError, match=r"unknown target 'os\.system': must be one of abs, cos"):
        get_target("os.system")


# --- learned fit (science layer) ----------------------------------------------------------------


def test_fit_relu_mlp_is_seeded_and_leaves_global_rng_alone():
    x = torch.linspace(0, 2 * math.pi, 10)
    torch.manual_seed(7)
    before = torch.rand(3)
    torch.manual_seed(7)
    net_a, losses_a = fit_relu_mlp(x, torch.sin(x), steps=300, lr=1e-2, seed=3)
    assert torch.equal(torch.rand(3), before)  # the caller's random stream is untouched
    _, losses_b = fit_relu_mlp(x, torch.sin(x), steps=300, lr=1e-2, seed=3)
    assert torch.equal(losses_a, losses_b)
    assert net_a.hidden_units == [9]
    assert [n for n, _ in net_a.named_parameters()] == [
        "mlp.Linear_0.weight",
        "mlp.Linear_0.bias",
        "mlp.Output_Linear.weight",
        "mlp.Output_Linear.bias",
    ]
    assert losses_a.shape == (300,)
    # losses[k] is the loss before step k: the last one is one step behind the returned net.
    mse = torch.mean((evaluate_mlp(net_a, x) - torch.sin(x)) ** 2).item()
    assert mse <= losses_a[-1].item() * 1.05


def test_fit_relu_mlp_fits_a_line_exactly():
    # A line is in the span of one hidden ReLU that is active everywhere; Adam gets there.
    x = torch.linspace(0, 1, 5)
    net, losses = fit_relu_mlp(x, 2 * x + 1, steps=2000, lr=1e-2, seed=0)
    assert losses[-1] < 1e-6 < losses[0]
    assert torch.allclose(evaluate_mlp(net, x), 2 * x + 1, atol=2e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, r"steps=0 is invalid"),
        ({"lr": 0.0}, r"lr=0.0 is invalid"),
        ({"lr": float("nan")}, r"lr=nan is invalid"),
        ({"x": [1.0]}, r"x_train has 1 point"),
        ({"y": [0.0, float("inf")]}, r"y_train contains NaN"),
    ],
)
def test_fit_relu_mlp_refuses_bad_arguments(kwargs, match):
    x = torch.tensor(kwargs.pop("x", [0.0, 1.0]))
    y = torch.tensor(kwargs.pop("y", [0.0] * len(x)))
    with pytest.raises(ValueError, match=match):
        fit_relu_mlp(x, y, **{"steps": 10, "lr": 1e-2, "seed": 0, **kwargs})


# --- the task through the compose API -----------------------------------------------------------


def test_tutorial_default_writes_metrics_png_and_tensorboard(compose_config, tmp_path):
    record = run_approx(compose_config, tmp_path, [])
    assert record["status"] == "ok" and record["task"] == "approx"
    metrics = record["metrics"]
    assert all(isinstance(v, int | float) for v in metrics.values())  # flat, for mlplab-report
    assert metrics["approx/num_relus"] == 9
    # The construction passes through every training point.
    assert metrics["approx/train_max_error"] < 1e-12
    # Tutorial's sin on [0, 2*pi], 10 points, 1000-point grid, against numpy's interpolant.
    oracle = interpolation_max_error("sin", 0.0, 2 * math.pi, 10, 1000)
    assert metrics["approx/max_error"] == pytest.approx(oracle, rel=1e-9)
    # ... and within the linear-interpolation bound h^2/8 * max|sin''|.
    assert metrics["approx/max_error"] <= (2 * math.pi / 9) ** 2 / 8
    assert 0 < metrics["approx/rms_error"] < metrics["approx/max_error"]
    assert "learned/max_error" not in metrics

    png = (tmp_path / "run" / "approx.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000

    acc = EventAccumulator(str(tensorboard_run(tmp_path / "run")), size_guidance={"images": 0})
    acc.Reload()
    for key in ("approx/max_error", "approx/rms_error", "approx/num_relus"):
        (event,) = acc.Scalars(key)
        assert event.value == pytest.approx(metrics[key], rel=1e-6)
    (image,) = acc.Images("figures/approx")
    assert image.encoded_image_string.startswith(PNG_SIGNATURE)
    assert set(acc.PluginTagToContent("hparams")) >= {"_hparams_/session_start_info"}


@pytest.mark.parametrize(
    ("overrides", "target", "x_min", "x_max"),
    [
        # Kink at x = 0, which is a training point: the interpolant is the function itself.
        (["target=abs", "x_min=-pi", "x_max=pi", "n_points=5"], "abs", -math.pi, math.pi),
        (["target=abs", "x_min=-1", "x_max=1", "n_points=11"], "abs", -1.0, 1.0),
        # A smooth target off the tutorial's range, against the same numpy oracle.
        (["target=gaussian", "x_min=-3", "x_max=3", "n_points=7"], "gaussian", -3.0, 3.0),
    ],
)
def test_error_matches_interpolation_oracle(
    compose_config, tmp_path, overrides, target, x_min, x_max
):
    record = run_approx(compose_config, tmp_path, [*overrides, "eval_points=501", "logger=none"])
    n = int(overrides[-1].split("=")[1])
    oracle = interpolation_max_error(target, x_min, x_max, n, 501)
    assert record["metrics"]["approx/max_error"] == pytest.approx(oracle, rel=1e-9, abs=1e-12)
    if target == "abs":
        assert record["metrics"]["approx/max_error"] < 1e-12
    assert not (tmp_path / "run" / "tensorboard").exists()  # logger=none
    assert (tmp_path / "run" / "approx.png").read_bytes().startswith(PNG_SIGNATURE)


def test_learned_fit_reports_both_errors(compose_config, tmp_path):
    record = run_approx(compose_config, tmp_path, ["fit=learned", "learned.steps=2000"])
    metrics = record["metrics"]
    assert record["status"] == "ok"
    assert metrics["approx/max_error"] == pytest.approx(
        interpolation_max_error("sin", 0.0, 2 * math.pi, 10, 1000), rel=1e-9
    )
    for key in ("learned/max_error", "learned/rms_error", "learned/final_loss"):
        assert math.isfinite(metrics[key]), key
    # Sane, not perfect: sin has amplitude 1, and Adam on 10 points does far better than a constant.
    assert metrics["learned/rms_error"] < 0.3
    assert metrics["learned/max_error"] < 0.6
    # The training error is what the loss measured (the loss is one step behind).
    assert metrics["learned/train_rms_error"] ** 2 <= metrics["learned/final_loss"] * 1.05
    assert (tmp_path / "run" / "learned_loss.png").read_bytes().startswith(PNG_SIGNATURE)
    acc = EventAccumulator(str(tensorboard_run(tmp_path / "run")), size_guidance={"scalars": 0})
    acc.Reload()
    curve = acc.Scalars("learned/loss")
    assert len(curve) == 500 and curve[0].step == 0 and curve[-1].step == 1996
    assert curve[-1].value < curve[0].value
    (event,) = acc.Scalars("learned/max_error")
    assert event.value == pytest.approx(metrics["learned/max_error"], rel=1e-6)


@pytest.mark.parametrize(
    ("overrides", "key", "shown"),
    [
        (["target=sinh"], "target", "'sinh'"),
        (["target=__import__"], "target", "'__import__'"),
        (["n_points=1"], "n_points", "1"),
        (["n_points=2.5"], "n_points", "2.5"),
        (["eval_points=1"], "eval_points", "1"),
        (["n_points=1001", "eval_points=100000"], "eval_points", "100000"),
        (["x_min=3", "x_max=1"], "x_max", "1"),
        (["x_min=pi", "x_max=pi"], "x_max", "'pi'"),
        (["x_min=nan"], "x_min", "nan"),
        (["x_max=inf"], "x_max", "inf"),
        (["x_max=twopi"], "x_max", "'twopi'"),
        (["fit=magic"], "fit", "'magic'"),
        (["learned.steps=0"], "learned.steps", "0"),
        (["learned.lr=0"], "learned.lr", "0"),
        (["learned.lr=-0.1"], "learned.lr", "-0.1"),
        (["seed=-1"], "seed", "-1"),
    ],
)
def test_bad_values_fail_before_work_naming_the_key(
    compose_config, tmp_path, capsys, overrides, key, shown
):
    cfg = compose_config("approx", overrides)
    with pytest.raises(ConfigError) as err:
        validate_approx_config(cfg)
    assert err.value.key == key
    with pytest.raises(SystemExit) as exit_info:
        common.run_task(
            cfg, _approx_body, output_dir=tmp_path / "run", overrides=[], multirun=False
        )
    assert exit_info.value.code == 2
    record = read_metrics(tmp_path / "run")
    assert record["status"] == "failed" and record["error_type"] == "ConfigError"
    assert record["error"].startswith(f"{key}={shown} is invalid: ")
    assert record["metrics"] == {}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.json"]
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"mlplab-approx: error: {key}=")


# --- real console scripts -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_run_writes_its_folder(tmp_path):
    proc = run_cli(
        "approx",
        f"paths.log_dir={tmp_path}",
        "target=gaussian",
        "x_min=-pi",
        "n_points=9",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "approx" / "runs").iterdir()
    record = read_metrics(run_dir)
    assert record["status"] == "ok"
    assert record["overrides"] == [
        f"paths.log_dir={tmp_path}",
        "target=gaussian",
        "x_min=-pi",
        "n_points=9",
    ]
    oracle = interpolation_max_error("gaussian", -math.pi, 2 * math.pi, 9, 1000)
    assert record["metrics"]["approx/max_error"] == pytest.approx(oracle, rel=1e-9)
    assert (run_dir / "approx.png").read_bytes().startswith(PNG_SIGNATURE)
    assert any(tensorboard_run(run_dir).glob("events.out.tfevents.*"))
    assert "gaussian on [-3.14159, 6.28319] with 8 ReLUs: max error" in proc.stdout


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_bad_value_exits_2_with_one_line(tmp_path):
    proc = run_cli("approx", f"paths.log_dir={tmp_path}", "learned.lr=-1", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mlplab-approx: error: learned.lr=-1 is invalid: must be a number > 0.0"
    ]


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_multirun_max_error_falls_like_n_to_minus_two(tmp_path):
    ns = [8, 16, 32, 64]
    proc = run_cli(
        "approx",
        "-m",
        f"n_points={','.join(map(str, ns))}",
        f"paths.log_dir={tmp_path}",
        "logger=none",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (sweep_dir,) = (tmp_path / "approx" / "multiruns").iterdir()
    records = [read_metrics(sweep_dir / str(job)) for job in range(len(ns))]
    assert [r["status"] for r in records] == ["ok"] * len(ns)
    assert [r["overrides"][0] for r in records] == [f"n_points={n}" for n in ns]
    errors = [r["metrics"]["approx/max_error"] for r in records]
    slope = np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert -2.2 <= slope <= -1.8, (slope, errors)
    for n, error in zip(ns, errors, strict=True):
        assert error == pytest.approx(
            interpolation_max_error("sin", 0.0, 2 * math.pi, n, 1000), rel=1e-9
        )
