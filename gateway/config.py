"""YAML configuration → typed, validated objects.

Every section is a frozen dataclass; `load_config` walks the YAML against the type hints and
fails with `ConfigError` naming the file, the key path and the problem (unknown key, wrong type,
bad value). The site secret is never inline: the config names a file or an environment variable.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from gateway.config_network import (
    AuditConfig,
    DestinationConfig,
    MetricsConfig,
    NetworkConfig,
)


class ConfigError(ValueError):
    """A configuration problem: names the file, the key path and what is wrong."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source, self.path, self.problem = source, path, problem
        super().__init__(f"{source}: {path or '<top>'}: {problem}")


OPTION_NAMES: dict[str, str] = {
    # standard name (PS3.15 Table E.1-1 column heading) -> column of the shipped table
    "Retain Safe Private Option": "retain_safe_private",
    "Retain UIDs Option": "retain_uids",
    "Retain Device Identity Option": "retain_device_identity",
    "Retain Institution Identity Option": "retain_institution_identity",
    "Retain Patient Characteristics Option": "retain_patient_characteristics",
    "Retain Longitudinal Temporal Information with Full Dates Option": "retain_long_full_dates",
    "Retain Longitudinal Temporal Information with Modified Dates Option":
        "retain_long_modified_dates",
    "Clean Descriptors Option": "clean_descriptors",
    "Clean Structured Content Option": "clean_structured_content",
    "Clean Graphics Option": "clean_graphics",
}

TagAction = Literal["keep", "clean", "remove", "empty", "replace", "hash"]

# Options of the default profile (the research defaults): dates shifted per patient within
# `date_shift_days`, age / sex / size / weight kept; private elements removed (no Retain Safe
# Private). A configuration that names no options gets these; `options: []` is the bare Basic
# Profile.
DEFAULT_OPTIONS = (
    "Retain Longitudinal Temporal Information with Modified Dates Option",
    "Retain Patient Characteristics Option",
)


@dataclass(frozen=True)
class TagOverride:
    """A per-tag override on top of the profile (`phi_tags`). `name` is a label for people."""

    action: TagAction
    value: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.action == "replace" and self.value is None:
            raise ValueError("action 'replace' needs a 'value'")
        if self.action != "replace" and self.value is not None:
            raise ValueError(f"'value' is only allowed with action 'replace', not {self.action!r}")


@dataclass(frozen=True)
class ProfileConfig:
    """The Basic Profile plus options, named as PS3.15 names them, and per-tag overrides."""

    options: tuple[str, ...] = DEFAULT_OPTIONS
    phi_tags: dict[str, TagOverride] = field(default_factory=dict)
    date_shift_days: tuple[int, int] = (-365, -1)
    pseudonym_prefix: str = "GANTRY-"
    # Original values longer than this many bytes are not backed up (listed in the audit).
    backup_max_value_bytes: int = 1_048_576

    def __post_init__(self) -> None:
        for name in self.options:
            if name not in OPTION_NAMES:
                raise ValueError(
                    f"unknown option {name!r}; expected one of: {', '.join(OPTION_NAMES)}"
                )
        full = "Retain Longitudinal Temporal Information with Full Dates Option"
        modified = "Retain Longitudinal Temporal Information with Modified Dates Option"
        if full in self.options and modified in self.options:
            raise ValueError("the Full Dates and Modified Dates options exclude each other")
        lo, hi = self.date_shift_days
        if lo > hi:
            raise ValueError(f"date_shift_days: {lo} is greater than {hi}")
        if self.phi_tags:
            from gateway.deid.tags import parse_tag_key  # pydicom's dictionary, when needed

            for key in self.phi_tags:
                parse_tag_key(key)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(OPTION_NAMES[name] for name in self.options)


@dataclass(frozen=True)
class SecretConfig:
    """Where the site secret (HMAC key) lives: a file or an environment variable."""

    file: str | None = None
    env: str | None = None

    def __post_init__(self) -> None:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of 'file' or 'env'")


@dataclass(frozen=True)
class BackupConfig:
    """Encrypted Attributes Sequence backup: on/off and the recipients' certificates."""

    enabled: bool = False
    recipients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.enabled and not self.recipients:
            raise ValueError("backup is enabled but no 'recipients' (certificate files) are named")


@dataclass(frozen=True)
class RedactionRuleConfig:
    """A machine signature (tag conditions) and the rectangles to blank on its images."""

    name: str
    match: dict[str, Any]
    regions: tuple[tuple[int, int, int, int], ...]

    def __post_init__(self) -> None:
        from gateway.deid.signatures import rule_from_config

        rule_from_config(self.name, self.match, self.regions)  # ValueError names the key


@dataclass(frozen=True)
class RedactionConfig:
    """Pixel redaction rules and the fail-closed burned-in policy."""

    rules: tuple[RedactionRuleConfig, ...] = ()
    ctp_scripts: tuple[str, ...] = ()
    at_risk_modalities: tuple[str, ...] = ("US", "XC", "ES", "OT", "SC", "DOC")
    at_risk_sop_classes: tuple[str, ...] = (
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic
        "1.2.840.10008.5.1.4.1.1.77.1.2.1",  # Video Microscopic
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic
    )
    # at-risk objects no rule covers: quarantine them, pass them as they are, or find their
    # text by OCR and redact what identifies (`ocr_redact: all`: every word found)
    on_risk: Literal["quarantine", "pass", "ocr"] = "quarantine"
    ocr_redact: Literal["identifying", "all"] = "identifying"
    ocr_patterns: tuple[str, ...] = ()  # regular expressions (case-insensitive) that identify
    output_encoding: Literal["native", "rle", "jpeg2000"] = "native"

    def __post_init__(self) -> None:
        for i, pattern in enumerate(self.ocr_patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"ocr_patterns[{i}]: not a regular expression: {exc}") from None


@dataclass(frozen=True)
class RouteConfig:
    """First matching route wins: conditions, the profile to apply, where to send."""

    name: str
    destinations: tuple[str, ...]
    profile: str = "default"
    calling_ae: tuple[str, ...] = ()
    called_ae: tuple[str, ...] = ()
    # keyword or tag -> value | [values] | {test: argument} (gateway.deid.signatures' language)
    tags: dict[str, Any] = field(default_factory=dict)
    backup: BackupConfig | None = None
    burned_in: Literal["quarantine", "pass", "ocr"] | None = None

    def __post_init__(self) -> None:
        if self.tags:
            from gateway.deid.signatures import compile_match

            try:
                compile_match(self.tags)
            except ValueError as exc:
                raise ValueError(f"tags.{exc}") from None


# Risk weights of the audit, by what a finding is (see gateway/risk.py).
RISK_WEIGHTS: dict[str, int] = {
    "identity": 20,     # PatientID, PatientName and the other identifying attributes
    "person_name": 10,  # any other PN
    "sequence": 5,      # a sequence removed or emptied whole
    "text": 4,          # LO, LT, ST, UT, SH, UC
    "private": 3,       # a private element
    "date": 3,          # DA, DT
    "other": 2,         # any other element the profile acts on
    "uid": 1,           # a UI to be replaced
    "burned_in": 50,    # BurnedInAnnotation YES
}


@dataclass(frozen=True)
class RiskConfig:
    """How the audit weighs its findings into a 0-100 score (categories of RISK_WEIGHTS)."""

    weights: dict[str, int] = field(default_factory=lambda: dict(RISK_WEIGHTS))

    def __post_init__(self) -> None:
        for name, weight in self.weights.items():
            if name not in RISK_WEIGHTS:
                raise ValueError(f"weights: unknown category {name!r}; expected one of: "
                                 + ", ".join(RISK_WEIGHTS))
            if not 0 <= weight <= 100:
                raise ValueError(f"weights.{name}: {weight} is outside 0..100")
        object.__setattr__(self, "weights", {**RISK_WEIGHTS, **self.weights})


@dataclass(frozen=True)
class Config:
    """The whole configuration of one Gantry node or batch run."""

    site_key: SecretConfig = SecretConfig(env="GANTRY_SITE_KEY")
    state_dir: str = "./gantry-state"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    profile: ProfileConfig = ProfileConfig()
    profiles: dict[str, ProfileConfig] = field(default_factory=dict)
    backup: BackupConfig = BackupConfig()
    redaction: RedactionConfig = RedactionConfig()
    risk: RiskConfig = RiskConfig()
    network: NetworkConfig = NetworkConfig()
    destinations: dict[str, DestinationConfig] = field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()
    metrics: MetricsConfig | None = None  # None: no HTTP endpoint
    default_route: str | None = None  # route name used when none matches; None → quarantine
    audit: AuditConfig = AuditConfig()
    source: str = "<defaults>"

    def __post_init__(self) -> None:
        for route in self.routes:
            for dest in route.destinations:
                if dest not in self.destinations:
                    raise ValueError(f"route {route.name!r} names unknown destination {dest!r}")
            if route.profile != "default" and route.profile not in self.profiles:
                raise ValueError(f"route {route.name!r} names unknown profile {route.profile!r}")
        if self.default_route and self.default_route not in {r.name for r in self.routes}:
            raise ValueError(f"default_route {self.default_route!r} is not a route name")

    @property
    def base_dir(self) -> Path:
        """Relative paths in the configuration are relative to its file (else the cwd)."""
        if self.source.startswith("<"):
            return Path.cwd()
        return Path(self.source).resolve().parent

    def profile_named(self, name: str) -> ProfileConfig:
        return self.profile if name == "default" else self.profiles[name]


# ---------------------------------------------------------------------------- other spellings

# Values other de-identification tools use where Gantry has no such value.
VALUE_HINTS = {
    word: "; dates are not shifted per tag: with the Modified Dates option (a default) every "
          "date moves by the patient's offset within profile.date_shift_days"
    for word in ("shift", "jitter")
}


def _seed_hint(cls: type, key: str, value: Any) -> str:
    """What Gantry calls a key that other tools' configurations use ('' when it knows none)."""
    if key == "date_jitter":
        bounds = "[MIN, MAX]"
        if isinstance(value, dict) and {"min_days", "max_days"} <= set(value):
            bounds = f"[{value['min_days']}, {value['max_days']}]"
        return (f"the per-patient date shift is profile.date_shift_days: {bounds} (whole days, "
                "used by the Modified Dates option in profile.options, on by default)")
    if key == "remove_private_tags":
        return ("private elements are always removed unless profile.options names 'Retain Safe "
                "Private Option' (which keeps those of PS3.15 Table E.3.10-1); keep one more "
                "with profile.phi_tags: {'(gggg,eeee)': {action: keep}}")
    if key in ("privacy_profile", "deid_profile"):
        return ("the profile is the PS3.15 Basic Profile plus the options named in "
                "profile.options (`options: []` is the Basic Profile alone; left out: "
                + ", ".join(DEFAULT_OPTIONS) + ")")
    if cls is Config and key in {f.name for f in dataclasses.fields(ProfileConfig)}:
        return f"{key} belongs under profile: write it as profile.{key}"
    return ""


# ---------------------------------------------------------------------------- loading


def _convert(tp: Any, value: Any, source: str, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, source, path)
            except ConfigError as exc:
                errors.append(exc.problem)
        raise ConfigError(source, path, "; ".join(errors))
    if origin is Literal:
        if isinstance(value, str) and value.lower() in args:  # REMOVE, Quarantine: the same
            return value.lower()
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            hint = VALUE_HINTS.get(str(value).lower(), "")
            raise ConfigError(source, path, f"{value!r} is not one of {allowed}{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(source, path, f"expected a mapping, got {type(value).__name__}")
        return _build(tp, value, source, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(source, path, f"expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, source, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(source, path, f"expected a list of {len(args)}, got {len(value)}")
        return tuple(_convert(a, v, source, f"{path}[{i}]") for i, (a, v) in
                     enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, path, f"expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(args[1], v, source, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, path, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, path, f"expected a string, got {type(value).__name__}")
        return value
    raise ConfigError(source, path, f"unsupported type {tp!r}")  # pragma: no cover


def _build(cls: type, data: dict, source: str, path: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "source"}
    kwargs = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in names:
            hint = _seed_hint(cls, str(key), value)
            if hint:
                raise ConfigError(source, sub, f"not a Gantry key: {hint}")
            expected = ", ".join(sorted(names))
            raise ConfigError(source, sub, f"unknown key; expected one of: {expected}")
        kwargs[key] = _convert(hints[key], value, source, sub)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(source, path, str(exc)) from None


def parse_config(data: Any, source: str) -> Config:
    """Validate already-parsed YAML data into a `Config`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, "", "the configuration must be a mapping")
    config = _build(Config, data, source, "")
    return dataclasses.replace(config, source=source)


def _yaml_problem(exc: yaml.YAMLError) -> tuple[str, str]:
    """(where, problem) of a YAML syntax error: its line and column in the file, not in
    PyYAML's `<unicode string>`."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    problem = ", ".join(p for p in parts if p) or type(exc).__name__
    return where, f"not valid YAML: {problem}"


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load a YAML file (or the embedded default when `path` is None)."""
    if path is None:
        text = resources.files("gateway").joinpath("data/default.yaml").read_text()
        return parse_config(yaml.safe_load(text), "<embedded default>")
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, *_yaml_problem(exc)) from None
    return parse_config(data, source)
