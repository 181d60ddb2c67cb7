"""Choose a route for an object: ordered rules from the configuration, first match wins.

A rule matches on the calling AE, the called AE and tag conditions — a value (equals), a list
(one of) or `{"regex": pattern}` (full match, on the string form; for multi-valued elements any
value may match). No match → the configured `default_route`, else None (quarantine "no route").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from gateway.config import Config, RouteConfig
from gateway.deid.tags import parse_tag_key, tag_str

NO_ROUTE = "no route"


class RoutingError(ValueError):
    """A route condition that cannot be used (names the route and the key)."""


@dataclass(frozen=True)
class _Condition:
    tag: int
    values: tuple[str, ...] | None = None
    pattern: re.Pattern[str] | None = None

    def matches(self, ds: Dataset) -> bool:
        elem = ds.get(self.tag)
        if elem is None or elem.value is None or elem.VR == "SQ":
            return False
        raw = elem.value
        values = [str(v) for v in raw] if isinstance(raw, MultiValue | list) else [str(raw)]
        values = [v.strip() for v in values]
        if self.pattern is not None:
            return any(self.pattern.fullmatch(v) for v in values)
        assert self.values is not None
        return any(v in self.values for v in values)


@dataclass(frozen=True)
class _Rule:
    route: RouteConfig
    calling: frozenset[str]
    called: frozenset[str]
    conditions: tuple[_Condition, ...]

    def matches(self, ds: Dataset, calling_ae: str, called_ae: str) -> bool:
        if self.calling and calling_ae.strip() not in self.calling:
            return False
        if self.called and called_ae.strip() not in self.called:
            return False
        return all(c.matches(ds) for c in self.conditions)


def _condition(route: str, key: str, spec: Any) -> _Condition:
    try:
        tag = parse_tag_key(key)
    except ValueError as exc:
        raise RoutingError(f"route {route!r}: tags.{key}: {exc}") from None
    if isinstance(spec, dict):
        if set(spec) != {"regex"}:
            raise RoutingError(f"route {route!r}: tags.{key}: a mapping must be {{regex: ...}}")
        try:
            return _Condition(tag, pattern=re.compile(str(spec["regex"])))
        except re.error as exc:
            raise RoutingError(f"route {route!r}: tags.{key}: bad regex: {exc}") from None
    if isinstance(spec, list | tuple):
        return _Condition(tag, values=tuple(str(v) for v in spec))
    return _Condition(tag, values=(str(spec),))


class Router:
    """The compiled routes of one configuration."""

    def __init__(self, config: Config) -> None:
        self.rules = tuple(
            _Rule(r, frozenset(a.strip() for a in r.calling_ae),
                  frozenset(a.strip() for a in r.called_ae),
                  tuple(_condition(r.name, k, v) for k, v in r.tags.items()))
            for r in config.routes
        )
        self.default = next((r for r in config.routes if r.name == config.default_route), None)

    @property
    def tags(self) -> Sequence[str]:
        """The tags the rules read (for a header-only parse)."""
        return sorted({tag_str(c.tag) for rule in self.rules for c in rule.conditions})

    def route(self, ds: Dataset, calling_ae: str = "", called_ae: str = "") -> RouteConfig | None:
        """The first matching route, else the default route, else None."""
        for rule in self.rules:
            if rule.matches(ds, calling_ae, called_ae):
                return rule.route
        return self.default
