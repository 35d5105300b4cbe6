"""Hydra's sweep grammar as an Optuna search space, and a trial's parameters back as overrides.

=================================  ==========================================================
override                           Optuna distribution
=================================  ==========================================================
``choice(a, b, ...)``, ``a,b``     ``CategoricalDistribution`` of the values
``range(start, stop[, step])``     ``IntDistribution`` (``FloatDistribution`` for floats) of
                                   the values Hydra's range gives (``stop`` excluded)
``shuffle(range(...))``            ``CategoricalDistribution`` of the values
``interval(low, high)``            ``FloatDistribution`` (``IntDistribution`` for
                                   ``int(interval(...))``)
``tag(log, interval(low, high))``  the same on a log scale
anything else                      not searched: passed to every trial as written
=================================  ==========================================================

A chosen value goes back to Hydra as override text that Hydra parses to the same value, so a
choice is written as it is for the basic sweeper: ``choice('ReLU()', 'LeakyReLU(0.1)')``.
Optuna is imported when a search space is built, not when Hydra scans its plugins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    Glob,
    IntervalSweep,
    Override,
    Quote,
    QuotedString,
    RangeSweep,
    Transformer,
)
from hydra.errors import HydraException

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

LOG = "log"


class SearchSpaceError(HydraException):
    """An override the search cannot use; the message names it and what is allowed."""

    def __init__(self, override: Override, allowed: str) -> None:
        super().__init__(f"{override.input_line} is invalid: {allowed}")


# NamedTuples, not dataclasses: Hydra's plugin scan runs this module before it is in
# sys.modules, where a dataclass looks up its string annotations.
class Dimension(NamedTuple):
    """One searched key: its Optuna distribution and, for a categorical one, each choice's
    override text (``'ReLU()'`` for the string ``ReLU()``)."""

    key: str
    distribution: BaseDistribution
    texts: tuple[str, ...] | None = None

    def override(self, value: Any) -> str:
        """``key=<text>``: the override that gives the job ``value``."""
        if self.texts is None:
            return f"{self.key}={override_text(value)}"
        choices = self.distribution.choices  # type: ignore[attr-defined]
        return f"{self.key}={self.texts[choices.index(value)]}"


class SearchSpace(NamedTuple):
    """The searched dimensions and the fixed overrides, in the order they were given."""

    entries: tuple[Dimension | str, ...]

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        """Parameter name (the override key) -> distribution, for ``Study.ask``."""
        return {e.key: e.distribution for e in self.entries if isinstance(e, Dimension)}

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """A trial's overrides: each dimension at ``params[key]``, the fixed ones as written.

        Raises:
            KeyError: ``params`` lacks a searched key.
        """
        return [e if isinstance(e, str) else e.override(params[e.key]) for e in self.entries]


def override_text(value: Any) -> str:
    """``value`` as override text that Hydra parses back to it. A string is written bare when
    Hydra reads it back as the same string (``rings``), else quoted as one writes it
    (``'LeakyReLU(0.1)'``, ``'1'``, ``'a,b'``) rather than backslash-escaped."""
    text = Transformer.str(value)
    if not isinstance(value, str) or (text == value and _reads_back(text, value)):
        return text
    return QuotedString(text=value, quote=Quote.single).with_quotes()


def _reads_back(text: str, value: str) -> bool:
    try:
        parsed = OverridesParser.create().parse_override(f"key={text}")
    except HydraException:
        return False
    return not parsed.is_sweep_override() and parsed.value() == value


def params_lines(params: Mapping[str, Any] | None) -> list[str]:
    """``hydra.sweeper.params`` (key -> override value) as override lines ``key=value``.

    YAML gives non-strings for plain values (``model.width: 8``); they are written in Hydra's
    grammar (``null``, ``[1,2]``), so that Hydra parses them back to the same value.
    """
    return [
        f"{key}={value if isinstance(value, str) else Transformer.str(value)}"
        for key, value in (params or {}).items()
    ]


def search_space(lines: Iterable[str]) -> SearchSpace:
    """Parse overrides (``hydra.sweeper.params`` first, then the command line's) into a space.

    A key given twice keeps its first place and its last value, so the command line's
    ``model.width=choice(0,8)`` or ``model.width=8`` replaces the params entry.

    Raises:
        hydra.errors.OverrideParseException: a line is not in Hydra's override grammar.
        SearchSpaceError: a sweep Optuna cannot search (``glob``, ``log`` on a choice, an
            empty range, an interval Optuna refuses), naming the override.
    """
    entries: dict[str, Dimension | str] = {}
    for override in OverridesParser.create().parse_overrides(list(lines)):
        key = override.get_key_element()
        if override.is_sweep_override():
            entries[key] = dimension(override)
        else:
            assert override.input_line is not None  # set by the parser
            entries[key] = override.input_line
    return SearchSpace(tuple(entries.values()))


def dimension(override: Override) -> Dimension:
    """The Optuna dimension of one sweep override (see the module's table).

    Raises:
        SearchSpaceError: naming the override and what is allowed.
    """
    from optuna.distributions import FloatDistribution, IntDistribution

    sweep = override.value()
    key = override.get_key_element()
    tags = set(getattr(sweep, "tags", ()) or ())
    if isinstance(sweep, Glob):
        raise SearchSpaceError(override, "glob() is not searched; list the options in choice()")
    if LOG in tags and not isinstance(sweep, IntervalSweep):
        raise SearchSpaceError(override, "tag(log, ...) applies to interval(low, high) only")
    if isinstance(sweep, IntervalSweep):
        integers = isinstance(sweep.start, int) and isinstance(sweep.end, int)
        kind = IntDistribution if integers else FloatDistribution
        try:
            return Dimension(key, kind(sweep.start, sweep.end, log=LOG in tags))
        except ValueError as err:  # Optuna's own check: low <= high, low > 0 on a log scale
            raise SearchSpaceError(override, str(err)) from None
    if isinstance(sweep, RangeSweep) and not sweep.shuffle:
        return _range_dimension(override, key, sweep)
    if isinstance(sweep, ChoiceSweep | RangeSweep):
        return _categorical_dimension(override, key)
    raise SearchSpaceError(override, f"{type(sweep).__name__} is not a sweep Optuna searches")


def _range_dimension(override: Override, key: str, sweep: RangeSweep) -> Dimension:
    """range(start, stop, step): the values Hydra's range gives, as a stepped distribution."""
    from optuna.distributions import FloatDistribution, IntDistribution

    values = list(override.sweep_iterator())
    if not values:
        raise SearchSpaceError(override, "the range is empty")
    step = abs(sweep.step)
    low, high = min(values), max(values)
    if all(isinstance(v, int) for v in values) and isinstance(step, int):
        return Dimension(key, IntDistribution(low, high, step=step))
    return Dimension(key, FloatDistribution(float(low), float(high), step=float(step)))


def _categorical_dimension(override: Override, key: str) -> Dimension:
    """choice(...) or shuffle(range(...)): the values, each with its override text.

    Optuna's choices are None, bool, int, float or str; a list or dict choice is kept as its
    override text (Hydra's ``Transformer.encode``).
    """
    from optuna.distributions import CategoricalDistribution

    choices, texts = [], []
    for value in override.sweep_iterator():  # one pass: a shuffled range is shuffled per pass
        choices.append(Transformer.encode(value))
        texts.append(override_text(value))
    return Dimension(key, CategoricalDistribution(choices), tuple(texts))
