"""The tutorial's general-purpose MLP (``Net``) and a safe parser for its activation specs."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from itertools import pairwise

from torch import Tensor, nn

from mlplab.checks import check_int, invalid, is_int

# Element-wise activations of torch.nn that a spec may name. The tutorial builds them with
# eval('nn.%s' % actv); we parse the spec instead and only ever look names up in this table.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (
        nn.ReLU,
        nn.ReLU6,
        nn.LeakyReLU,
        nn.PReLU,
        nn.RReLU,
        nn.ELU,
        nn.SELU,
        nn.CELU,
        nn.GELU,
        nn.SiLU,
        nn.Mish,
        nn.Tanh,
        nn.Sigmoid,
        nn.Hardtanh,
        nn.Hardsigmoid,
        nn.Hardswish,
        nn.Hardshrink,
        nn.Softshrink,
        nn.Tanhshrink,
        nn.Softplus,
        nn.Softsign,
        nn.LogSigmoid,
        nn.Threshold,
        nn.Identity,
    )
}


# Real specs are a few dozen characters; the cap keeps Python's parser away from inputs deep
# enough to raise RecursionError or MemoryError instead of SyntaxError.
MAX_SPEC_LENGTH = 200


def _spec_error(spec: object, why: str) -> ValueError:
    allowed = ", ".join(sorted(ACTIVATIONS))
    shown = repr(spec)
    if len(shown) > 80:  # keep the error one readable line
        shown = f"{shown[:60]}... ({len(shown)} characters)"
    return ValueError(
        f"activation spec {shown} is invalid ({why}); expected Name or Name(literal args) "
        f"with Name one of: {allowed}"
    )


def _literal(node: ast.expr, spec: str) -> object:
    """Evaluate a literal argument (number, string, bool, None, negative number) or refuse."""
    try:
        value = ast.literal_eval(node)
    except ValueError as err:
        raise _spec_error(spec, f"argument {ast.unparse(node)!r} is not a literal") from err
    if not isinstance(value, int | float | str | bool | type(None)):
        raise _spec_error(spec, f"argument {ast.unparse(node)!r} is not a number, bool or string")
    return value


def parse_activation(spec: str) -> nn.Module:
    """Build an activation module from a spec such as ``"ReLU()"`` or ``"LeakyReLU(0.1)"``.

    Args:
        spec: ``Name`` or ``Name(args)`` where Name is an element-wise activation of ``torch.nn``
            (see ``ACTIVATIONS``) and the arguments are literals.

    Returns:
        A fresh module instance.

    Raises:
        ValueError: naming the spec and the allowed activations, for anything else.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise _spec_error(spec, "it must be a non-empty string")
    if len(spec) > MAX_SPEC_LENGTH:
        raise _spec_error(spec, f"it is longer than {MAX_SPEC_LENGTH} characters")
    try:
        node = ast.parse(spec.strip(), mode="eval").body
    except (SyntaxError, RecursionError, MemoryError) as err:
        raise _spec_error(spec, "it does not parse") from err
    if isinstance(node, ast.Name):
        name, args, kwargs = node.id, [], {}
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            raise _spec_error(spec, "*args and **kwargs are not allowed")
        name = node.func.id
        args = [_literal(a, spec) for a in node.args]
        kwargs = {k.arg: _literal(k.value, spec) for k in node.keywords}
    else:
        raise _spec_error(spec, "it is not a name or a call of a name")
    if name not in ACTIVATIONS:
        raise _spec_error(spec, f"unknown activation {name!r}")
    try:
        return ACTIVATIONS[name](*args, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as err:
        # torch checks some arguments with assert (Hardtanh(2, -2)), others with raise.
        raise _spec_error(spec, f"bad arguments for {name}: {err}") from err


class MLP(nn.Module):
    """The tutorial's ``Net``: Linear + activation per hidden layer, then ``Output_Linear``.

    Modules are named as in the tutorial (``mlp.Linear_0``, ``mlp.Activation_0``, ...,
    ``mlp.Output_Linear``), so a state_dict of the tutorial's ``Net`` loads into it unchanged.

    Args:
        activation: Activation spec for every hidden layer, parsed by :func:`parse_activation`.
        in_features: Input features; any input is flattened to (batch, in_features).
        hidden_units: Width of each hidden layer; empty gives a linear model.
        out_features: Output features (logits).
    """

    def __init__(
        self,
        activation: str,
        in_features: int,
        hidden_units: Sequence[int],
        out_features: int,
    ) -> None:
        super().__init__()
        check_int("in_features", in_features, minimum=1)
        check_int("out_features", out_features, minimum=1)
        hidden_units = _check_widths(hidden_units)
        try:  # fail on a bad spec even when there are no hidden layers
            parse_activation(activation)
        except ValueError as err:
            raise invalid("activation", activation, str(err)) from None
        self.activation = activation
        self.in_features = in_features
        self.hidden_units = hidden_units
        self.out_features = out_features
        self.mlp = nn.Sequential()
        in_num = in_features
        for i, out_num in enumerate(hidden_units):
            self.mlp.add_module(f"Linear_{i}", nn.Linear(in_num, out_num))
            self.mlp.add_module(f"Activation_{i}", parse_activation(activation))
            in_num = out_num
        self.mlp.add_module("Output_Linear", nn.Linear(in_num, out_features))

    def forward(self, x: Tensor) -> Tensor:
        """Flatten to (batch, in_features) and return the logits."""
        return self.mlp(x.reshape(-1, self.in_features))

    def config(self) -> dict[str, object]:
        """The constructor arguments, as plain values: ``MLP(**net.config())`` rebuilds it."""
        return {
            "activation": self.activation,
            "in_features": self.in_features,
            "hidden_units": list(self.hidden_units),
            "out_features": self.out_features,
        }

    @property
    def hparams(self) -> dict[str, object]:
        """What the network is, for HPARAMS: its arguments, its ``width`` (widest hidden layer)
        and ``depth`` (hidden layers), whichever arguments of :func:`build_mlp` gave them."""
        units = self.hidden_units
        return {**self.config(), "width": max(units, default=0), "depth": len(units)}


def _check_widths(hidden_units: object) -> list[int]:
    allowed = "must be a list of integers >= 1"
    if isinstance(hidden_units, str | bytes) or not isinstance(hidden_units, Sequence):
        raise invalid("hidden_units", hidden_units, allowed)
    units = list(hidden_units)
    if not all(is_int(width) and width >= 1 for width in units):
        raise invalid("hidden_units", units, allowed)
    return units


def count_parameters(in_features: int, hidden_units: Sequence[int], out_features: int) -> int:
    """Weights and biases of an MLP with these sizes, computed without building it."""
    sizes = [in_features, *hidden_units, out_features]
    return sum((a + 1) * b for a, b in pairwise(sizes))


def hidden_units_for(width: int, depth: int) -> list[int]:
    """Hidden layer widths of a uniform MLP: ``depth`` layers of ``width`` units."""
    check_int("width", width, minimum=1)
    check_int("depth", depth, minimum=0)
    return [width] * depth


def width_for_budget(in_features: int, out_features: int, depth: int, param_budget: int) -> int:
    """Smallest uniform width whose MLP has at least ``param_budget`` weights and biases.

    The tutorial's follow-up question, deeper or wider at a fixed number of parameters: every
    hidden layer gets this width; input and output layers are counted.
    """
    check_int("param_budget", param_budget, minimum=1)
    if check_int("depth", depth, minimum=0) < 1:
        raise invalid("depth", depth, "must be >= 1 with a param_budget")
    # The count grows with width, so bisect on it; the upper end always meets the budget.
    low, high = 1, max(param_budget, 1)
    while low < high:
        mid = (low + high) // 2
        if count_parameters(in_features, [mid] * depth, out_features) >= param_budget:
            high = mid
        else:
            low = mid + 1
    return low


def build_mlp(
    activation: str = "ReLU()",
    in_features: int = 2,
    out_features: int = 4,
    width: int = 128,
    depth: int = 1,
    hidden_units: Sequence[int] | None = None,
    param_budget: int | None = None,
) -> MLP:
    """Build an :class:`MLP` from width and depth, an explicit ``hidden_units`` list, or a budget.

    Precedence: ``hidden_units`` if given, else ``depth`` layers of the width that
    ``param_budget`` implies if given, else ``depth`` layers of ``width``.

    Raises:
        ValueError: ``name=value is invalid: ...`` naming the bad argument.
    """
    if hidden_units is not None:
        units = _check_widths(hidden_units)
    elif param_budget is not None:
        units = [width_for_budget(in_features, out_features, depth, param_budget)] * depth
    else:
        units = hidden_units_for(width, depth)
    return MLP(activation, in_features, units, out_features)
