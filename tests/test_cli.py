"""The console-script front door: activation quoting, Hydra's errors in one line, the launcher."""

from __future__ import annotations

import gc
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import python_output, run_cli
from mlplab.tasks.common import (
    CONF_DIR,
    ROOT_DIR,
    CommandLine,
    checkout_note,
    closest_keys,
    hydra_error_line,
    parse_command_line,
    quote_call_values,
    settle_gc,
    split_top_level,
)


def test_split_top_level_keeps_brackets_and_quotes_whole():
    assert split_top_level("ReLU,LeakyReLU(0.1, True),[1,2],{a:1,b:2},'x,y'") == [
        "ReLU",
        "LeakyReLU(0.1, True)",
        "[1,2]",
        "{a:1,b:2}",
        "'x,y'",
    ]


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("model.activation=LeakyReLU(0.1)", "model.activation='LeakyReLU(0.1)'"),
        ("model.activation=ReLU,LeakyReLU(0.1)", "model.activation=ReLU,'LeakyReLU(0.1)'"),
        ("model.activation='ELU(alpha=0.5)'", "model.activation='ELU(alpha=0.5)'"),
        ("model.width=choice(8,16)", "model.width=choice(8,16)"),  # Hydra's own sweep function
        ("model.width=range(8,64,8)", "model.width=range(8,64,8)"),
        ("seed=1,2,3", "seed=1,2,3"),
        ("-m", "-m"),
    ],
)
def test_activation_specs_are_quoted_for_hydra(arg, expected):
    assert quote_call_values([arg]) == [expected]


def hydra_error(overrides: list[str], config_dir: Path = CONF_DIR) -> Exception:
    """What Hydra raises composing the train config with ``overrides``."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(config_dir), version_base="1.3"):
            compose("train", overrides=overrides)
    except Exception as err:
        return err
    finally:
        GlobalHydra.instance().clear()
    raise AssertionError(f"{overrides} composed")


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["loss=foo"],
            "loss='foo' is invalid: must be one of custom_ce, torch_ce (the loss/ options in "
            f"{CONF_DIR})",
        ),
        (
            ["trainer.foo=1"],
            "Could not override 'trainer.foo'. To append to your config use +trainer.foo=1 "
            "(Key 'foo' is not in struct)",
        ),
        (
            ["model.hidden_units=[1"],
            "cannot parse 'model.hidden_units=[1': no viable alternative at input '[1'",
        ),
        (["~seed=5"], "Could not delete from config. The value of 'seed' is 2021 and not 5."),
    ],
)
def test_hydra_errors_become_one_line(overrides, line):
    assert hydra_error_line(hydra_error(overrides)) == line


def test_an_unknown_option_names_every_folder_searched(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.yaml").write_text("_target_: x.Y\n")
    err = hydra_error([f"hydra.searchpath=[file://{tmp_path}]", "data=moons"])
    assert hydra_error_line(err) == (
        "data='moons' is invalid: must be one of mine, rings, spiral "
        f"(the data/ options in {CONF_DIR}, {tmp_path})"
    )


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["trainer.foo=1"], "mlplab-train: error: Could not override 'trainer.foo'"),
        (["data=moons"], "mlplab-train: error: data='moons' is invalid: must be one of rings,"),
        (["-m", "seed=1,2", "optimizer=adam,adamw"], "mlplab-train: error: optimizer='adamw'"),
        (["--config-dir", "nowhere"], "mlplab-train: error: Additional config directory '"),
    ],
)
def test_a_hydra_error_on_the_real_command_line_is_one_line_exit_2(tmp_path, args, start):
    result = run_cli("train", *args, f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(start), line
    # Refused before any job: no run folder (a multirun's folder holds only Hydra's sweep record).
    assert not list(tmp_path.rglob("metrics.json")) and not (tmp_path / "train" / "runs").exists()


def struct_line(key: str, value: str, leaf: str | None = None) -> str:
    """Hydra's one line for an override of a key the config lacks (``leaf``: the missing part)."""
    leaf = leaf or key.rsplit(".", 1)[-1]
    return (
        f"Could not override '{key}'. To append to your config use +{key}={value} "
        f"(Key '{leaf}' is not in struct)"
    )


MISSPELLED = [
    (["trainer.max_epoch=3"], struct_line("trainer.max_epoch", "3"), "trainer.max_epochs"),
    (["sed=3"], struct_line("sed", "3"), "seed"),
    (["optimzer=sgd"], struct_line("optimzer", "sgd"), "optimizer"),
    (
        ["trainr.max_epochs=3"],
        struct_line("trainr.max_epochs", "3", "trainr"),
        "trainer.max_epochs",
    ),
    # The keys of the node the other overrides compose: sgd has a momentum, adam has not.
    (
        ["optimizer=sgd", "optimizer.momentm=0.9"],
        struct_line("optimizer.momentm", "0.9"),
        "optimizer.momentum",
    ),
    (["debg=fast"], struct_line("debg", "fast"), "debug"),  # a group whose option is null
    (
        ["hydra.job.chdr=true"],
        "Could not override 'hydra.job.chdr'. To append to your config use "
        "+hydra.job.chdr=true (Key 'chdr' not in 'JobConf')",
        "hydra.job.chdir",
    ),
    (["~sed"], "Could not delete from config. 'sed' does not exist", "seed"),
    # A sweep composes with each swept key at its first value.
    (
        ["-m", "seed=1,2", "trainer.max_epoch=3"],
        struct_line("trainer.max_epoch", "3"),
        "trainer.max_epochs",
    ),
    # Nothing close, or nothing composes without the override: Hydra's line alone.
    (["trainer.foo=1"], struct_line("trainer.foo", "1"), None),
    (["trainer.max_epoch=3", "sed=4"], struct_line("trainer.max_epoch", "3"), None),
]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize(("args", "hydra_line", "suggestion"), MISSPELLED)
def test_a_misspelled_key_gets_the_closest_keys(tmp_path, args, hydra_line, suggestion):
    result = run_cli("train", *args, f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2
    line = f"{hydra_line}; did you mean {suggestion}?" if suggestion else hydra_line
    assert result.stderr.strip().splitlines() == [f"mlplab-train: error: {line}"]
    assert not list(tmp_path.rglob("metrics.json"))


def rmsprop_folder(folder: Path, group: str = "optimizer") -> Path:
    """A config folder of one's own, holding an RMSprop option whose alpha is misspelled."""
    (folder / group).mkdir(parents=True)
    (folder / group / "rms.yaml").write_text(
        "_target_: torch.optim.RMSprop\n_partial_: true\nlr: 0.01\nalphaa: 0.9\n"
    )
    return folder


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize(
    "where",
    [
        ["--config-dir", "{folder}"],
        ["-cd", "{folder}", "-cn", "train"],
        ["--config-dir={folder}"],
        ["hydra.searchpath=[file://{folder}]"],
    ],
)
def test_did_you_mean_reads_your_config_folder_as_hydra_does(tmp_path, where):
    folder = rmsprop_folder(tmp_path / "mine")
    where = [word.format(folder=folder) for word in where]
    result = run_cli(
        "train", *where, "optimizer=rms", "optimizer.alpha=0.5", f"paths.log_dir={tmp_path}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mlplab-train: error: "
        + struct_line("optimizer.alpha", "0.5")
        + "; did you mean optimizer.alphaa?"
    ]


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_misspelled_group_folder_suggests_the_group(tmp_path):
    # A folder optimzer/ makes Hydra read optimzer as a group, which no defaults list names.
    folder = rmsprop_folder(tmp_path / "mine", group="optimzer")
    result = run_cli(
        "train", "--config-dir", str(folder), "optimzer=rms", f"paths.log_dir={tmp_path}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mlplab-train: error: Could not override 'optimzer'. No match in the defaults list. "
        "To append to your default list use +optimzer=rms; did you mean optimizer?"
    ]


@pytest.mark.slow
@pytest.mark.subprocess
def test_eval_suggests_its_own_keys(tmp_path):
    result = run_cli("eval", "ckpt_path=x.ckpt", "gird_size=3", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mlplab-eval: error: " + struct_line("gird_size", "3") + "; did you mean grid_size?"
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["a=1", "-cd", "x", "-m", "b=2"], CommandLine(None, "x", None, ["a=1", "b=2"])),
        (
            ["--config-dir=x", "-cn", "eval", "--cfg", "job", "c=3"],
            CommandLine("eval", "x", None, ["c=3"]),
        ),
        (["-cn", "a", "--config-name", "b", "-cp", "p"], CommandLine("b", None, "p", [])),
    ],
)  # fmt: skip
def test_the_command_line_is_split_as_hydras_argparse_does(argv, expected):
    assert parse_command_line(argv) == expected


def test_closest_keys_walks_to_the_first_missing_part():
    cfg = OmegaConf.create({"trainer": {"max_epochs": 1, "min_epochs": 1}, "seed": 1})
    assert closest_keys(cfg, "trainer.max_epoch") == ["trainer.max_epochs"]
    assert closest_keys(cfg, "trainr.max_epochs.x") == ["trainer.max_epochs.x"]
    assert closest_keys(cfg, "trainer.max_epochs") == []  # it exists: nothing to suggest
    assert closest_keys(cfg, "seed.x") == []  # below a value: no keys
    assert closest_keys(cfg, "debg", groups=["debug"]) == ["debug"]
    assert closest_keys(cfg, "trainer.debg", groups=["debug"]) == []  # groups at the top only


@pytest.mark.slow
@pytest.mark.subprocess
def test_hydra_full_error_shows_hydras_whole_report(tmp_path):
    result = run_cli(
        "train", "data=moons", f"paths.log_dir={tmp_path}", cwd=tmp_path,
        env={"HYDRA_FULL_ERROR": "1"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "Available options in 'data'" in result.stderr


def test_running_another_checkout_than_the_one_you_are_in_is_noted(tmp_path):
    other = tmp_path / "fork"
    (other / "conf").mkdir(parents=True)
    (other / "src" / "mlplab").mkdir(parents=True)
    (other / "conf" / "train.yaml").write_text("task_name: train\n")
    (other / "outputs").mkdir()
    note = checkout_note("train", cwd=other / "outputs")
    assert note == (
        f"mlplab-train: note: this runs the mlplab of {ROOT_DIR} (configs from {CONF_DIR}, "
        f"outputs under paths.log_dir, by default {ROOT_DIR / 'outputs'}), not of {other} where "
        "you are; install that "
        f"checkout (make install) or set PYTHONPATH={other / 'src'}"
    )
    assert checkout_note("train", cwd=ROOT_DIR / "src") is None  # the checkout that runs
    assert checkout_note("train", cwd=tmp_path) is None  # no checkout at all


# ------------------------------------------------ the launcher: garbage collector off at start-up


def test_every_console_script_starts_through_the_launcher():
    scripts = {
        ep.name: ep.value
        for ep in importlib.metadata.entry_points(group="console_scripts")
        if ep.name.startswith("mlplab-")
    }
    assert scripts == {
        "mlplab-train": "mlplab.tasks.cli:train",
        "mlplab-eval": "mlplab.tasks.cli:evaluate",
        "mlplab-approx": "mlplab.tasks.cli:approx",
        "mlplab-lif": "mlplab.tasks.cli:lif",
        "mlplab-report": "mlplab.tasks.cli:report",
    }


def test_the_launcher_imports_nothing_before_it_turns_the_collector_off():
    code = (
        "import sys; import mlplab.tasks.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('torch', 'hydra', 'omegaconf'))))"
    )
    assert python_output(code) == "[]"


def test_settle_gc_freezes_start_up_and_turns_the_collector_back_on():
    # In a child process: freezing this one would keep the test session's garbage forever.
    code = (
        "import gc; gc.disable(); from mlplab.tasks.common import settle_gc; "
        "settle_gc(); frozen = gc.get_freeze_count(); settle_gc(); "
        "print(gc.isenabled(), frozen > 1000, gc.get_freeze_count() == frozen)"
    )
    assert python_output(code).split() == ["True", "True", "True"]


def test_settle_gc_leaves_a_running_collector_alone():
    before = gc.get_freeze_count()
    settle_gc()
    assert gc.isenabled() and gc.get_freeze_count() == before


@pytest.mark.parametrize(
    ("task", "args", "entry"),
    [
        ("train", ["debug=fast", "figures=false", "logger=none"], "console script"),
        ("approx", ["logger=none"], "console script"),
        ("lif", ["mode=trace", "logger=none"], "console script"),
        ("approx", ["logger=none"], "python -m"),
    ],
)
def test_a_task_turns_the_collector_back_on_for_its_work(tmp_path, task, args, entry):
    # Both entries turn the collector off; without settle_gc it would still be off at exit,
    # and without the launcher nothing would be frozen.
    start = {
        "console script": f"from mlplab.tasks import cli\ncli.run({task!r})\n",
        "python -m": f"import runpy\nrunpy.run_module('mlplab.tasks.{task}', run_name='__main__')",
    }[entry]
    code = (
        "import atexit, gc, sys\n"
        "report = lambda: print('collector on:', gc.isenabled(), gc.get_freeze_count() > 0)\n"
        "atexit.register(report)\n"
        f"sys.argv = ['mlplab-{task}', *sys.argv[1:]]\n" + start
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args, f"paths.log_dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1] == "collector on: True True"


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_non_editable_install_stops_with_one_line_on_its_missing_configs(tmp_path) -> None:
    # `pip install <checkout>` copies the package without conf/: every command says so, exit 2.
    source = tmp_path / "checkout"
    shutil.copytree(ROOT_DIR / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT_DIR / name, source / name)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q"]
    installed = subprocess.run(
        [*pip, "--target", str(site), str(source)], capture_output=True, text=True, timeout=300
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert (site / "mlplab" / "tasks" / "train.py").is_file() and not (site / "conf").exists()
    script = "from mlplab.tasks.train import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", script, "debug=fast"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    conf = site.parent / "conf" / "train.yaml"  # where ROOT_DIR puts it: beside the package's src
    assert line == (
        f"mlplab-train: error: no config {conf}: mlplab runs from its checkout (conf/ beside "
        "src/); install the checkout editable: make install, or pip install -e <checkout>"
    )
