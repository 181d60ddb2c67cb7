"""Choose a route for an object: ordered rules from the configuration, first match wins.

A rule matches on the calling AE, the called AE and tag conditions. The conditions are written
in the same language as a redaction rule's `match` (see `gateway.deid.signatures`): a value
(equals the element's text, multiple values joined by a backslash), a list (any of them), or a
mapping of tests (`regex` searches, `matches` is a full match, `icontains`, `lt`, `present`,
`not`, ...). No match → the configured `default_route`, else None: the object is quarantined
with `no_route_reason`, which names what the routes were tried on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from gateway.config import Config, RouteConfig
from gateway.deid.signatures import compile_match
from gateway.deid.values import stored_text

NO_ROUTE = "no route"
MODALITY, SOP_CLASS_UID = 0x00080060, 0x00080016


def no_route_reason(ds: Dataset, calling_ae: str, called_ae: str) -> str:
    """'no route: ...' naming the modality, the SOP class and the AE titles the routes were
    tried on (none of them identifies a patient), so the fix to the configuration is plain."""
    modality = stored_text(ds, MODALITY) or "(none)"
    sop_class = stored_text(ds, SOP_CLASS_UID) or "(none)"
    return (f"{NO_ROUTE}: modality {modality}, SOP class {sop_class}, calling AE "
            f"{calling_ae.strip() or '(none)'}, called AE {called_ae.strip() or '(none)'}; "
            "no route matches and there is no default_route")


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
