# -*- test-case-name: tests.test_showconfig -*-
"""
C{python -m twistreg config}: the configuration a server would run with, every default
filled in and secrets hidden, or the one line that says which key is wrong.

What it prints is what a start or a reload would load (the same file lookup, flavor and
C{_env:} values), so an operator can check a change before sending the HUP.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import yaml

from twistreg.commands import fail
from twistreg.config import ConfigError, Settings, load_settings, require_supported_storage

#: What a secret shows as: that it is set, never what it is.
HIDDEN = "<hidden>"


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add C{config} to the subcommands of C{python -m twistreg}."""
    parser = commands.add_parser(
        "config", help="print the effective configuration, secrets hidden",
        description="Load the configuration as the server would (file, flavor, _env: values)"
        " and print every setting with its default filled in, secrets hidden; or say in one"
        " line which key is wrong (exit status 1).")
    parser.add_argument("--config", metavar="FILE", help="the config file (as twist twistreg)")
    parser.add_argument("--flavor", metavar="NAME", help="the config flavor")
    parser.add_argument("--storage-path", metavar="DIR", help="overrides storage_path")
    parser.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    parser.set_defaults(run=_run)


def effective(settings: Settings) -> dict[str, Any]:
    """
    The settings as plain data: secrets (the fields kept out of reprs, and passwords in
    URLs) hidden, and the raw flavor left out, since it holds them as written.
    """
    shown = _plain(settings)
    shown.pop("raw", None)
    return shown


def _plain(value: Any) -> Any:
    if attrs.has(type(value)):
        return {field.name: _field(field, getattr(value, field.name))
                for field in attrs.fields(type(value))}
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(item) for item in value)
    if isinstance(value, str):
        return _without_password(value)
    return value


def _field(field: attrs.Attribute, value: Any) -> Any:
    if not field.repr and value is not None:
        return HIDDEN
    return _plain(value)


def _without_password(text: str) -> str:
    """A URL's password replaced (C{postgresql://user:secret@host/db}); other text as is."""
    if "@" not in text or "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    if password is None:
        return text
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{HIDDEN}@{host}"))


def _run(options: argparse.Namespace) -> None:
    try:
        settings = load_settings(options.config, options.flavor,
                                 {"storage_path": options.storage_path})
        require_supported_storage(settings)
    except ConfigError as error:
        fail("config", str(error))
    shown = effective(settings)
    if options.json:
        print(json.dumps(shown, indent=2, sort_keys=True))
    else:
        print(yaml.safe_dump(shown, default_flow_style=False, sort_keys=True), end="")
