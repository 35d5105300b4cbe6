"""The console-script front door: activation quoting, group options, Hydra errors in one line."""

from __future__ import annotations

import gc
import importlib.metadata
import subprocess
import sys

import pytest

from conftest import python_output, run_cli
from mlplab.tasks.common import (
    CONF_DIR,
    ConfigError,
    _all_keys_known,
    check_composes,
    check_group_choices,
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


def test_unknown_group_option_is_refused_naming_the_group_and_the_options():
    with pytest.raises(ConfigError, match=r"^loss='foo' is invalid: must be one of custom_ce, "):
        check_group_choices(["loss=foo"])
    with pytest.raises(ConfigError, match=r"^optimizer='adamw'"):
        check_group_choices(["-m", "optimizer=adam,adamw"])
    check_group_choices(["loss=torch_ce", "experiment=null", "model.width=3"])  # all fine


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.foo=1"], r"Could not override 'trainer\.foo'.*\+trainer\.foo=1"),
        (["model.hidden_units=[1"], r"^cannot parse 'model\.hidden_units=\[1'"),
        (["~seed=5"], r"seed"),
    ],
)
def test_hydra_override_errors_become_one_line(overrides, message):
    with pytest.raises(ValueError, match=message) as info:
        check_composes("train", overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("config", "overrides", "known"),
    [
        ("train", ["seed=1", "model.width=3"], True),  # keys of the primary config
        ("train", ["trainer.max_epochs=3", "paths.log_dir=/x"], True),  # of default options
        ("train", ["logger=csv", "logger.save_dir=x"], True),  # of the option picked here
        ("lif", ["lif.Rm.num=3", "trace.I=2"], True),
        ("train", ["trainer.foo=1"], False),  # not in trainer/cpu.yaml: Hydra must say it
        ("train", ["logger=none", "logger.save_dir=x"], False),
        ("train", ["callbacks.model_checkpoint=5"], False),  # replaces a mapping
        ("train", ["experiment=tutorial", "trainer.max_epochs=3"], False),  # a global option
        ("train", ["+trainer.gradient_clip_val=0"], False),
        ("lif", ["lif.Rm.foo=3"], False),
    ],
)
def test_override_keys_known_without_composing(config, overrides, known):
    assert _all_keys_known(config, overrides, CONF_DIR) is known


def test_unknown_key_of_a_group_option_is_one_line():
    with pytest.raises(ValueError, match=r"Could not override 'paths\.foo'") as info:
        check_composes("lif", ["mode=sweep", "paths.foo=1"])
    assert "\n" not in str(info.value)


def test_valid_and_sweep_command_lines_pass_the_check():
    check_composes("train", ["model.width=8", "+trainer.gradient_clip_val=0"])
    check_composes("train", ["model.width=8,16"])  # a sweep value: left to Hydra's multirun
    check_composes("train", ["-m", "seed=1,2"])


@pytest.mark.slow
def test_unknown_key_on_the_real_command_line_is_one_line_exit_2(tmp_path):
    result = run_cli("train", "trainer.foo=1", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlplab-train: error: Could not override")
    assert not (tmp_path / "train").exists()  # refused before Hydra made a run folder


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
