"""Choose a route for an object: ordered rules from the configuration, first match wins.

A rule matches on the calling AE, the called AE and tag conditions. The conditions are written
in the same language as a redaction rule's `match` (see `gateway.deid.signatures`): a value
(equals the element's text, multiple values joined by a backslash), a list (any of them), or a
mapping of tests (`regex` searches, `matches` is a full match, `icontains`, `lt`, `present`,
`not`, ...). No match → the configured `default_route`, else None (quarantine "no route").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from gateway.config import Config, RouteConfig
from gateway.deid.signatures import compile_match

NO_ROUTE = "no route"


@dataclass(frozen=True)
class _Rule:
    route: RouteConfig
    calling: frozenset[str]
    called: frozenset[str]
    tags: Callable[[Dataset], bool] | None

    def matches(self, ds: Dataset, calling_ae: str, called_ae: str) -> bool:
        if self.calling and calling_ae.strip() not in self.calling:
            return False
        if self.called and called_ae.strip() not in self.called:
            return False
        return self.tags is None or self.tags(ds)


def _rule(route: RouteConfig) -> _Rule:
    """The compiled rule (RouteConfig has already checked its conditions)."""
    return _Rule(route, frozenset(a.strip() for a in route.calling_ae),
                 frozenset(a.strip() for a in route.called_ae),
                 compile_match(route.tags) if route.tags else None)


class Router:
    """The compiled routes of one configuration."""

    def __init__(self, config: Config) -> None:
        self.rules = tuple(_rule(r) for r in config.routes)
        self.default = next((r for r in config.routes if r.name == config.default_route), None)

    def route(self, ds: Dataset, calling_ae: str = "", called_ae: str = "") -> RouteConfig | None:
        """The first matching route, else the default route, else None."""
        for rule in self.rules:
            if rule.matches(ds, calling_ae, called_ae):
                return rule.route
        return self.default
