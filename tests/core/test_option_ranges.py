"""Option ranges are declared once, on the dataclass fields (``config.hp``), and enforced by one checker
(``config.check_fields``, which ``make_component`` runs for every component): one-line ConfigErrors naming the
option, the bound and the value; booleans never pass a numeric bound."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Optional

import pytest

from fedloom.algorithms import ALGORITHMS
from fedloom.config import _unwrap_optional, check_fields, hp, make_component
from fedloom.data.base import DATASETS
from fedloom.errors import ConfigError
from fedloom.models import MODELS
from fedloom.seams import SEAM_REGISTRIES

import fedloom.data.datasets  # noqa: F401  (registers the datasets)


@dataclasses.dataclass(frozen=True)
class Options:
    count: int = hp(1, ge=1)
    rate: float = hp(0.5, gt=0, le=1)
    share: float = hp(0.1, ge=0, lt=0.5)
    cap: Optional[int] = hp(None, ge=1)
    mode: str = hp("a", choices=("a", "b"))
    flag: bool = False


def _refusal(**values: Any) -> str:
    with pytest.raises(ConfigError) as info:
        check_fields(Options(**values), "opt")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_lower_bound_refuses_below_it_and_a_boolean() -> None:
    assert _refusal(count=0) == "opt.count must be >= 1, got 0"
    assert _refusal(count=True) == "opt.count must be >= 1, got True"  # True is not 1
    assert _refusal(count=False) == "opt.count must be >= 1, got False"


def test_ranges_are_worded_with_their_brackets() -> None:
    assert _refusal(rate=0.0) == "opt.rate must be in (0, 1], got 0.0"
    assert _refusal(rate=1.5) == "opt.rate must be in (0, 1], got 1.5"
    assert _refusal(share=0.5) == "opt.share must be in [0, 0.5), got 0.5"
    assert _refusal(rate=float("nan")) == "opt.rate must be in (0, 1], got nan"
    assert _refusal(rate=float("inf")) == "opt.rate must be in (0, 1], got inf"
    assert _refusal(cap=0) == "opt.cap must be >= 1, got 0"
    assert _refusal(mode="c") == "opt.mode must be one of a, b, got 'c'"


def test_values_in_range_and_unset_options_pass() -> None:
    check_fields(Options(), "opt")
    check_fields(Options(count=3, rate=1, share=0, cap=None, mode="b", flag=True), "opt")


def test_the_prefix_defaults_to_the_registry_name() -> None:
    with pytest.raises(ConfigError, match=r"^ditto\.personal_epochs must be >= 1, got 0$"):
        ALGORITHMS.get("ditto")(personal_epochs=0).validate()
    with pytest.raises(ConfigError, match=r"^mlp\.hidden must be >= 1, got 0$"):
        MODELS.get("mlp")(hidden=0)  # datasets and models check when they are built


def _bad_value(fld: dataclasses.Field, hint: Any) -> Any:
    """A value outside the field's declared range, of the field's own type."""
    if "choices" in fld.metadata:
        return "no-such-choice"
    base, _ = _unwrap_optional(hint)
    bounds = fld.metadata["bounds"]
    if "ge" in bounds or "gt" in bounds:
        bound = bounds.get("ge", bounds.get("gt"))
        return base(bound - 1)
    bound = bounds.get("le", bounds.get("lt"))
    return base(bound + 1)


def _declared() -> list:
    cases = []
    for registry in (ALGORITHMS, DATASETS, MODELS, *SEAM_REGISTRIES):
        for name, cls in registry.items():
            if not dataclasses.is_dataclass(cls):
                continue
            hints = typing.get_type_hints(cls)
            for fld in dataclasses.fields(cls):
                if fld.metadata.get("bounds") or "choices" in fld.metadata:
                    cases.append(pytest.param(registry, name, fld.name, _bad_value(fld, hints[fld.name]),
                                              id=f"{name}.{fld.name}"))
    return cases


@pytest.mark.parametrize("registry, name, option, value", _declared())
def test_every_declared_range_is_enforced_when_the_component_is_built(registry: Any, name: str, option: str,
                                                                      value: Any) -> None:
    """Whatever a class's own validate() does, a value outside a declared range never gets through."""
    with pytest.raises(ConfigError, match=rf"^{name}\.{option} must be "):
        make_component(registry, name, {option: value})


def test_algorithms_declare_their_ranges_rather_than_code_them() -> None:
    declared = {case.id for case in _declared()}
    for expected in ("fedprox.mu", "ditto.personal_epochs", "fedala.rand_percent", "pfedme.evaluate",
                     "fedfomo.reference", "clip.norm", "krum.f", "attack.fraction", "mnist1d.seed", "mlp.hidden"):
        assert expected in declared
