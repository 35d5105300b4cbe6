"""Tests for the tutorial's MLP and its activation parser (mlplab.models.mlp)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from mlplab.models.mlp import (
    ACTIVATIONS,
    MLP,
    build_mlp,
    count_parameters,
    parse_activation,
    width_for_budget,
)

ROOT = Path(__file__).resolve().parents[1]


def tutorial_activation(actv):
    """Stand-in for the tutorial's ``eval('nn.%s' % actv)``: ``Name(float, key=float)`` only."""
    match = re.fullmatch(r"(\w+)\((.*)\)", actv)
    name, arg_text = match.groups()
    args, kwargs = [], {}
    for part in filter(None, (p.strip() for p in arg_text.split(","))):
        if "=" in part:
            key, value = part.split("=")
            kwargs[key.strip()] = float(value)
        else:
            args.append(float(part))
    return getattr(nn, name)(*args, **kwargs)


class Net(nn.Module):
    """The tutorial's ``Net`` solution, with ``eval`` replaced by :func:`tutorial_activation`."""

    def __init__(self, actv, input_feature_num, hidden_unit_nums, output_feature_num):
        super().__init__()
        self.input_feature_num = input_feature_num
        self.mlp = nn.Sequential()
        in_num = input_feature_num
        for i in range(len(hidden_unit_nums)):
            out_num = hidden_unit_nums[i]
            layer = nn.Linear(in_num, out_num)
            in_num = out_num
            self.mlp.add_module("Linear_%d" % i, layer)  # noqa: UP031 (the tutorial's line)
            actv_layer = tutorial_activation(actv)
            self.mlp.add_module("Activation_%d" % i, actv_layer)  # noqa: UP031
        out_layer = nn.Linear(in_num, output_feature_num)
        self.mlp.add_module("Output_Linear", out_layer)

    def forward(self, x):
        x = x.view(-1, self.input_feature_num)
        logits = self.mlp(x)
        return logits


NETS = [
    ("LeakyReLU(0.1)", 2, [100, 10, 5], 1),
    ("ReLU()", 2, [128], 4),
    ("Tanh()", 3, [7, 7], 2),
    ("ELU(alpha=0.5)", 5, [4, 9, 3, 2], 3),
    ("Sigmoid()", 1, [], 1),
    ("Softplus(beta=2.0)", 4, [6], 5),
]


# --- MLP versus the tutorial's Net -------------------------------------------------------------


def test_tutorial_example_output_shape():
    net = MLP("LeakyReLU(0.1)", 2, [100, 10, 5], 1)
    y = net(torch.zeros((100, 2)))
    assert y.shape == (100, 1)


@pytest.mark.parametrize(("actv", "n_in", "hidden", "n_out"), NETS)
def test_module_names_match_tutorial_net(actv, n_in, hidden, n_out):
    ours = MLP(actv, n_in, hidden, n_out)
    ref = Net(actv, n_in, hidden, n_out)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [name for name, _ in ours.named_modules()] == [n for n, _ in ref.named_modules()]
    assert [type(m) for m in ours.mlp] == [type(m) for m in ref.mlp]
    assert ours.mlp.Output_Linear.out_features == n_out


@pytest.mark.parametrize(("actv", "n_in", "hidden", "n_out"), NETS)
def test_tutorial_state_dict_loads_and_outputs_are_identical(actv, n_in, hidden, n_out):
    torch.manual_seed(0)
    ref = Net(actv, n_in, hidden, n_out)
    ours = MLP(actv, n_in, hidden, n_out)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(64, n_in)
    assert torch.equal(ours(x), ref(x))


@pytest.mark.parametrize(("actv", "n_in", "hidden", "n_out"), NETS)
def test_same_seed_builds_same_initial_weights(actv, n_in, hidden, n_out):
    torch.manual_seed(2021)
    ref = Net(actv, n_in, hidden, n_out)
    torch.manual_seed(2021)
    ours = MLP(actv, n_in, hidden, n_out)
    for (key, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b), key


def test_any_input_shape_is_flattened():
    torch.manual_seed(1)
    net = MLP("ReLU()", 2, [8], 3)
    x = torch.randn(5, 1, 2)
    assert torch.equal(net(x), net(x.reshape(5, 2)))
    images = torch.randn(6, 3, 4, 4)
    image_net = MLP("ReLU()", 48, [16, 8], 10)
    ref = Net("ReLU()", 48, [16, 8], 10)
    ref.load_state_dict(image_net.state_dict())
    out = image_net(images)
    assert out.shape == (6, 10)
    assert torch.equal(out, ref(images))
    # Non-contiguous inputs (where the tutorial's view() would fail) work too.
    transposed = images.transpose(2, 3)
    assert torch.equal(image_net(transposed), image_net(transposed.contiguous()))


def test_no_hidden_layers_is_a_linear_model():
    net = MLP("ReLU()", 3, [], 2)
    assert list(net.state_dict()) == ["mlp.Output_Linear.weight", "mlp.Output_Linear.bias"]
    assert [type(m) for m in net.mlp] == [nn.Linear]
    x = torch.randn(10, 3)
    expected = x @ net.mlp.Output_Linear.weight.T + net.mlp.Output_Linear.bias
    torch.testing.assert_close(net(x), expected)


def test_config_round_trips():
    net = MLP("LeakyReLU(0.1)", 2, (100, 10, 5), 1)
    config = net.config()
    assert config == {
        "activation": "LeakyReLU(0.1)",
        "in_features": 2,
        "hidden_units": [100, 10, 5],
        "out_features": 1,
    }
    rebuilt = MLP(**config)
    assert rebuilt.config() == config
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(4, 2)
    assert torch.equal(rebuilt(x), net(x))


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("ReLU()", 0, [4], 2), "in_features"),
        (("ReLU()", 2, [4], 0), "out_features"),
        (("ReLU()", 2.0, [4], 2), "in_features"),
        (("ReLU()", 2, [4, 0], 2), "hidden_units"),
        (("ReLU()", 2, [4, 2.5], 2), "hidden_units"),
        (("os.system('id')", 2, [], 2), "activation spec"),
    ],
)
def test_mlp_rejects_bad_sizes(args, name):
    with pytest.raises(ValueError, match=re.escape(name)):
        MLP(*args)


# --- sizes and budgets -------------------------------------------------------------------------


@pytest.mark.parametrize(("actv", "n_in", "hidden", "n_out"), NETS)
def test_count_parameters_equals_numel_sum(actv, n_in, hidden, n_out):
    net = MLP(actv, n_in, hidden, n_out)
    assert count_parameters(n_in, hidden, n_out) == sum(p.numel() for p in net.parameters())


def brute_force_width(n_in, n_out, depth, budget):
    width = 1
    while count_parameters(n_in, [width] * depth, n_out) < budget:
        width += 1
    return width


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("budget", [1, 50, 643, 644, 645, 5000, 20_000])
def test_width_for_budget_is_smallest_width_reaching_budget(depth, budget):
    width = width_for_budget(2, 4, depth, budget)
    assert width == brute_force_width(2, 4, depth, budget)
    assert count_parameters(2, [width] * depth, 4) >= budget
    if width > 1:
        assert count_parameters(2, [width - 1] * depth, 4) < budget


def test_width_for_budget_rejects_bad_arguments():
    with pytest.raises(ValueError, match="param_budget=0"):
        width_for_budget(2, 4, 1, 0)
    with pytest.raises(ValueError, match="depth=0"):
        width_for_budget(2, 4, 0, 100)


def test_build_mlp_precedence():
    # Defaults: one hidden layer of 128, the tutorial's spiral net.
    assert build_mlp().config() == {
        "activation": "ReLU()",
        "in_features": 2,
        "hidden_units": [128],
        "out_features": 4,
    }
    assert build_mlp(width=16, depth=3).hidden_units == [16, 16, 16]
    assert build_mlp(width=16, depth=0).hidden_units == []
    budget_width = width_for_budget(2, 4, 2, 5000)
    by_budget = build_mlp(width=16, depth=2, param_budget=5000)
    assert by_budget.hidden_units == [budget_width, budget_width]
    assert count_parameters(2, by_budget.hidden_units, 4) >= 5000
    # An explicit list wins over both.
    explicit = build_mlp(width=16, depth=2, hidden_units=[5, 3], param_budget=5000)
    assert explicit.hidden_units == [5, 3]
    assert build_mlp("Tanh()", 3, 2, hidden_units=[]).config()["hidden_units"] == []
    with pytest.raises(ValueError, match="width=0"):
        build_mlp(width=0)
    with pytest.raises(ValueError, match="depth=-1"):
        build_mlp(depth=-1)


# --- parse_activation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "cls", "attrs"),
    [
        ("ReLU", nn.ReLU, {"inplace": False}),
        ("ReLU()", nn.ReLU, {"inplace": False}),
        (" ReLU() ", nn.ReLU, {}),
        ("LeakyReLU(0.1)", nn.LeakyReLU, {"negative_slope": 0.1}),
        ("LeakyReLU(negative_slope=0.1)", nn.LeakyReLU, {"negative_slope": 0.1}),
        ("LeakyReLU(-0.5)", nn.LeakyReLU, {"negative_slope": -0.5}),
        ("ELU(alpha=0.5)", nn.ELU, {"alpha": 0.5}),
        ("Tanh", nn.Tanh, {}),
        ("Sigmoid()", nn.Sigmoid, {}),
        ("GELU", nn.GELU, {"approximate": "none"}),
        ("GELU(approximate='tanh')", nn.GELU, {"approximate": "tanh"}),
        ("SiLU", nn.SiLU, {}),
        ("Softplus(beta=2)", nn.Softplus, {"beta": 2, "threshold": 20}),
        ("Softplus(2, 10)", nn.Softplus, {"beta": 2, "threshold": 10}),
        ("CELU(alpha=2.0)", nn.CELU, {"alpha": 2.0}),
        ("Hardtanh(-2, 2)", nn.Hardtanh, {"min_val": -2, "max_val": 2}),
        ("Threshold(0.1, 20)", nn.Threshold, {"threshold": 0.1, "value": 20}),
        ("ReLU(inplace=True)", nn.ReLU, {"inplace": True}),
        ("Identity", nn.Identity, {}),
    ],
)
def test_parse_activation_accepts(spec, cls, attrs):
    module = parse_activation(spec)
    assert type(module) is cls
    for key, value in attrs.items():
        assert getattr(module, key) == value, key
    assert parse_activation(spec) is not module  # a fresh instance every time


def test_parsed_activation_computes_the_right_function():
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(
        parse_activation("LeakyReLU(0.1)")(x), torch.where(x > 0, x, 0.1 * x)
    )
    torch.testing.assert_close(parse_activation("ReLU")(x), x.clamp(min=0))
    torch.testing.assert_close(
        parse_activation("Softplus(beta=2)")(x), torch.log1p(torch.exp(2 * x)) / 2
    )


def test_every_allowed_activation_builds_and_is_elementwise():
    x = torch.randn(3, 5)
    needs_args = {"Threshold": "Threshold(0.1, 20)"}  # its two arguments have no defaults
    for name, cls in ACTIVATIONS.items():
        module = parse_activation(needs_args.get(name, name))
        assert type(module) is cls
        assert module(x).shape == x.shape, name


def test_threshold_without_arguments_is_a_value_error():
    with pytest.raises(ValueError, match="bad arguments for Threshold"):
        parse_activation("Threshold")


LONG_SPEC = "ReLU(" + "-" * 10_000 + "1)"


@pytest.mark.parametrize(
    "spec",
    [
        "__import__('os').system('id')",
        "Linear(2,2)",
        "Linear",
        "Sequential()",
        "ReLU(inplace=print)",
        "nn.ReLU()",
        "torch.nn.ReLU",
        "ReLU(*[1])",
        "ReLU(**{})",
        "LeakyReLU(lambda: 1)",
        "ReLU(",
        "ReLU)",
        "",
        "   ",
        "Softplus(beta=[1])",
        "Softplus(beta={'a': 1})",
        "ELU(alpha=(1).real)",
        "LeakyReLU(1e308*10)",
        "LeakyReLU(1j)",
        "ReLU()()",
        "ReLU[0]",
        "ReLU; import os",
        "ReLU(1, 2, 3)",
        "ReLU(bogus=1)",
        "Hardtanh(2, -2)",
        "relu",
        "ReLU(" + "not " * 5000 + "1)",
        "-" * 100_000 + "1",
        LONG_SPEC,
    ],
)
def test_parse_activation_rejects(spec):
    with pytest.raises(ValueError) as info:
        parse_activation(spec)
    message = str(info.value)
    assert "\n" not in message and len(message) < 800
    assert repr(spec)[:40] in message
    for name in ("ReLU", "LeakyReLU", "Tanh", "Sigmoid", "ELU", "GELU", "SiLU", "Softplus"):
        assert name in message


@pytest.mark.parametrize("spec", [None, 3, 0.1, b"ReLU", ["ReLU"], nn.ReLU])
def test_parse_activation_rejects_non_strings(spec):
    with pytest.raises(ValueError, match="must be a non-empty string"):
        parse_activation(spec)


def _forbidden_calls(path):
    """``eval(``/``exec(`` calls and ``pickle.load``/``loads`` in a file, found with ast."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in {"eval", "exec", "__import__"}:
                found.append(f"{path}:{node.lineno}: {func.id}(")
            if (
                isinstance(func, ast.Attribute)
                and func.attr in {"load", "loads", "Unpickler"}
                and isinstance(func.value, ast.Name)
                and func.value.id in {"pickle", "cPickle", "dill"}
            ):
                found.append(f"{path}:{node.lineno}: {func.value.id}.{func.attr}(")
        if isinstance(node, ast.ImportFrom) and node.module in {"pickle", "builtins"}:
            names = {alias.name for alias in node.names}
            if names & {"load", "loads", "Unpickler", "eval", "exec"}:
                found.append(f"{path}:{node.lineno}: from {node.module} import {sorted(names)}")
    return sorted(found, key=lambda hit: int(hit.split(":")[1]))


def test_no_eval_exec_or_pickle_load_in_sources():
    files = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "scripts").rglob("*.py"))
    assert any(f.name == "mlp.py" for f in files)
    found = [hit for path in files for hit in _forbidden_calls(path)]
    assert not found, "\n".join(found)


def test_forbidden_call_finder_sees_calls_but_not_methods(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle\n"
        "model.eval()\n"
        "evaluate(x)\n"
        "trainer.evaluate()\n"
        "torch.load(p, weights_only=True)\n"
        "eval('1')\n"
        "exec('x = 1')\n"
        "pickle.loads(b'')\n"
        "from pickle import load\n"
    )
    hits = _forbidden_calls(sample)
    assert [int(h.split(":")[1]) for h in hits] == [6, 7, 8, 9]
