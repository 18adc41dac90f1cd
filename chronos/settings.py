"""Settings declared once: name, type, default, bounds and a one-line doc.

A process's settings are flat ``CHRONOS_*`` environment variables. Each is declared
once, as a module-level ``Setting`` next to the code that uses it (the four
``*/config.py``, ``chronos/config.py`` for the ones several processes share,
``chronos/telemetry.py``, ``chronos/metrics.py`` (with the four metrics ports, which
``chronos top`` reads too), the CLI modules), and read once at
start with ``Setting.read``. A bad value raises ``ConfigError`` naming the variable; a
required one has no default (there are no secret defaults). An empty value counts as
unset, so ``CHRONOS_X=`` in a compose file means "the default".

Each of those modules lists what its process reads in a ``SETTINGS`` group, and
``python -m chronos.settings docs > docs/configuration.md`` writes one table per group
from the declarations, so the documented defaults and bounds cannot drift from the code
(``tests/unit/test_settings_docs.py`` regenerates and compares).

Why not pydantic-settings: the values are flat, bounded scalars whose cross-field
checks already live in the config dataclasses, no library writes our docs table, and
it would add pydantic and pydantic-core to every service for what this module does.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from chronos.errors import ChronosError

T = TypeVar("T")
Number = TypeVar("Number", int, float)

# The modules whose ``SETTINGS`` group docs/configuration.md documents, in its order.
# Names, not imports: ``chronos`` must not import the service packages.
DOCUMENTED_MODULES = (
    "command_server.config",
    "query_server.config",
    "query_server.console.config",
    "chronos.security.config",
    "outbox_poller.config",
    "projector.config",
    "chronos.process",
    "chronos.event_store.cli",
    "chronos.read_model.cli",
    "chronos.audit.cli",
)
REGENERATE_COMMAND = "python -m chronos.settings docs > docs/configuration.md"


class ConfigError(ChronosError):
    """A setting is missing or malformed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting(Generic[T]):
    """One environment variable: how to parse it, its default and what it does.

    Build one with ``integer``, ``port``, ``number``, ``flag``, ``text``, ``choice``
    or ``required`` rather than directly: they derive the parser and the documented
    type and bounds from the same arguments.
    """

    name: str
    doc: str
    type_name: str
    default: T
    bounds: str
    parse: Callable[[str], T]
    required: bool = False
    # For a required setting: how to get a value (appended to "is not set").
    hint: str = ""

    def read(self, environ: Mapping[str, str] | None = None) -> T:
        """The value from ``environ`` (default: the process environment).

        Raises:
            ConfigError: the variable is required and unset, or its value is malformed
                or out of bounds; the message names the variable.
        """
        raw = (os.environ if environ is None else environ).get(self.name, "")
        if raw == "":
            if self.required:
                raise ConfigError(
                    f"{self.name} is not set" + (f": {self.hint}" if self.hint else "")
                )
            return self.default
        try:
            return self.parse(raw)
        except ValueError as error:
            raise ConfigError(f"{self.name} {error}") from error

    @property
    def default_text(self) -> str:
        """The default as the docs show it."""
        if self.required:
            return "required"
        return _show(self.default)


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingsGroup:
    """What one process (or command) reads: one table of docs/configuration.md."""

    title: str
    summary: str
    settings: tuple[Setting[Any], ...]


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value) if value != "" else "(empty)"


def _bounded(
    kind: type[Number], kind_name: str, minimum: Number, maximum: Number
) -> Callable[[str], Number]:
    def parse(raw: str) -> Number:
        try:
            value = kind(raw)
        except ValueError as error:
            raise ValueError(f"must be {kind_name}, got {raw!r}") from error
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}, got {value}")
        return value

    return parse


def integer(name: str, default: int, *, minimum: int, maximum: int, doc: str) -> Setting[int]:
    """An integer within ``minimum..maximum`` (both included)."""
    assert minimum <= default <= maximum, f"{name}: default {default} out of bounds"
    return Setting(
        name=name,
        doc=doc,
        type_name="integer",
        default=default,
        bounds=f"{_show(minimum)} to {_show(maximum)}",
        parse=_bounded(int, "an integer", minimum, maximum),
    )


def port(name: str, default: int, *, doc: str) -> Setting[int]:
    """A TCP port (0 where the doc says what it means: disabled, or any free port)."""
    return integer(name, default, minimum=0, maximum=65535, doc=doc)


def number(
    name: str, default: float, *, minimum: float, maximum: float, doc: str
) -> Setting[float]:
    """A decimal number within ``minimum..maximum`` (both included)."""
    assert minimum <= default <= maximum, f"{name}: default {default} out of bounds"
    return Setting(
        name=name,
        doc=doc,
        type_name="number",
        default=float(default),
        bounds=f"{_show(float(minimum))} to {_show(float(maximum))}",
        parse=_bounded(float, "a number", minimum, maximum),
    )


def flag(name: str, *, doc: str) -> Setting[bool]:
    """``1`` (on) or ``0`` (off, the default)."""

    def parse(raw: str) -> bool:
        if raw not in ("0", "1"):
            raise ValueError(f"must be 0 or 1, got {raw!r}")
        return raw == "1"

    return Setting(
        name=name, doc=doc, type_name="flag", default=False, bounds="0 or 1", parse=parse
    )


def text(
    name: str,
    default: str,
    *,
    doc: str,
    length_max: int = 1000,
    check: Callable[[str], object] | None = None,
    type_name: str = "text",
    bounds: str = "",
) -> Setting[str]:
    """A string of at most ``length_max`` characters that ``check`` accepts (``check``
    raises ValueError with a message); ``bounds`` describes what it accepts."""

    def parse(raw: str) -> str:
        if len(raw) > length_max:
            raise ValueError(f"must be at most {length_max} characters, got {len(raw)}")
        if check is not None:
            try:
                check(raw)
            except ValueError as error:
                raise ValueError(f"is not valid: {error}") from error
        return raw

    if default:
        parse(default)
    return Setting(
        name=name,
        doc=doc,
        type_name=type_name,
        default=default,
        bounds=bounds or f"at most {length_max} characters",
        parse=parse,
    )


def choice(
    name: str, default: str, options: Mapping[str, T], *, doc: str, ignore_case: bool = False
) -> Setting[T]:
    """One of ``options``' keys; the value is the key's entry."""
    assert default in options, f"{name}: default {default!r} is not an option"
    keys = list(options)
    listed = f"{', '.join(keys[:-1])} or {keys[-1]}" if len(keys) > 1 else keys[0]

    def parse(raw: str) -> T:
        key = raw.upper() if ignore_case else raw
        if key not in options:
            raise ValueError(f"must be {listed}, got {raw!r}")
        return options[key]

    return Setting(
        name=name,
        doc=doc,
        type_name="choice",
        default=options[default],
        bounds=listed,
        parse=parse,
    )


def required(name: str, *, type_name: str, doc: str, hint: str = "") -> Setting[str]:
    """A string that must be set: a server address or credentials, never defaulted."""
    return Setting(
        name=name,
        doc=doc,
        type_name=type_name,
        default="",
        bounds="",
        parse=str,
        required=True,
        hint=hint,
    )


def documented_groups(modules: Sequence[str] = DOCUMENTED_MODULES) -> list[SettingsGroup]:
    """The ``SETTINGS`` group of each module, in order."""
    groups = []
    for module_name in modules:
        group = importlib.import_module(module_name).SETTINGS
        assert isinstance(group, SettingsGroup), f"{module_name}.SETTINGS is not a group"
        groups.append(group)
    return groups


def render_docs(groups: Sequence[SettingsGroup]) -> str:
    """docs/configuration.md: an introduction and one table per group."""
    lines = [
        "# Configuration",
        "",
        f"<!-- Generated from the declarations by `{REGENERATE_COMMAND}`; do not edit. -->",
        "",
        "Every process reads its settings once at start from `CHRONOS_*` environment",
        "variables and refuses to start (exit code 2, one line on stderr naming the",
        "variable) when one is malformed, out of bounds, or required and unset. An empty",
        "value counts as unset. Required settings have no default: there are no secret",
        "defaults. Traces go to OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the",
        "OpenTelemetry SDK reads its own `OTEL_*` variables).",
    ]
    for group in groups:
        lines += ["", f"## {group.title}", "", group.summary, ""]
        lines += [
            "| Variable | Type | Default | Bounds | What it does |",
            "| --- | --- | --- | --- | --- |",
        ]
        for setting in group.settings:
            bounds = setting.bounds or "-"
            lines.append(
                f"| `{setting.name}` | {setting.type_name} | `{setting.default_text}` "
                f"| {bounds} | {setting.doc} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    """``python -m chronos.settings docs``: prints docs/configuration.md."""
    if list(argv) != ["docs"]:
        print(f"usage: {REGENERATE_COMMAND}", file=sys.stderr)
        return 2
    sys.stdout.write(render_docs(documented_groups()))
    return 0


if __name__ == "__main__":
    # The imported module, not this ``__main__`` copy, owns the classes the groups use.
    from chronos.settings import main as _main

    sys.exit(_main(sys.argv[1:]))
