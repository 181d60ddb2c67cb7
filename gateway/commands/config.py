"""`gantry config show`: the effective configuration, every default filled in."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from gateway.config import Config, load_config


def register(sub: argparse._SubParsersAction, command: str | None = None) -> None:
    p = sub.add_parser("config", help="the configuration in force")
    config = p.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    q = config.add_parser("show", help="print the effective configuration as YAML: the file's "
                                       "keys and every default it leaves out")
    q.add_argument("--config", type=Path, help="YAML configuration (default: embedded)")
    q.set_defaults(func=cmd_show)


def _plain(value: Any, top: bool = False) -> Any:
    """Dataclasses as mappings (unset optional keys of a section left out), tuples as lists."""
    if dataclasses.is_dataclass(value):
        fields = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
        return {name: _plain(v) for name, v in fields
                if name != "source" and (top or v is not None)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def effective_yaml(config: Config) -> str:
    """`config` as YAML that `load_config` reads back to an equal configuration. The site key
    appears as where it is read from (a file or an environment variable), never as its value."""
    head = (f"# The effective configuration of {config.source}: its keys and every default it "
            "leaves out.\n# The site key is named by where it is read from; its value is never "
            "shown.\n")
    return head + yaml.safe_dump(_plain(config, top=True), sort_keys=False, allow_unicode=True,
                                 width=100)


def cmd_show(args: argparse.Namespace) -> int:
    print(effective_yaml(load_config(args.config)), end="")
    return 0
