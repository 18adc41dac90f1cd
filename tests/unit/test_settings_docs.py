"""Every setting is declared once and documented: docs/configuration.md is generated
from the declarations, and product code names no ``CHRONOS_*`` variable that is not
declared."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chronos.settings import REGENERATE_COMMAND, Setting, documented_groups, render_docs

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("chronos", "command_server", "query_server", "outbox_poller", "projector")
# Development tooling, on its way out of the product package; generated protobuf code.
NOT_PRODUCT = ("chronos/infra", "chronos/bench", "chronos/loadtest", "chronos/v1")
VARIABLE = re.compile(r"\bCHRONOS_[A-Z][A-Z0-9_]*[A-Z0-9]\b")


def declared_settings() -> dict[str, Setting[Any]]:
    """Every declared setting by name; a name declared twice must be one object."""
    by_name: dict[str, Setting[Any]] = {}
    for group in documented_groups():
        for setting in group.settings:
            first = by_name.setdefault(setting.name, setting)
            assert first is setting, f"{setting.name} is declared twice"
    return by_name


def product_files() -> list[Path]:
    files = [path for package in PRODUCT for path in sorted((ROOT / package).rglob("*.py"))]
    return [
        path
        for path in files
        if not any(path.relative_to(ROOT).as_posix().startswith(skip) for skip in NOT_PRODUCT)
    ]


def undeclared_variables(files: Iterable[Path], declared: Iterable[str]) -> dict[str, str]:
    """``CHRONOS_*`` names found in ``files`` but not in ``declared``, each with the
    first place it appears (``path:line``)."""
    known = set(declared)
    found: dict[str, str] = {}
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for name in VARIABLE.findall(line):
                if name not in known:
                    found.setdefault(name, f"{path.name}:{number}")
    return found


def test_docs_configuration_is_generated_from_the_declarations() -> None:
    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert documented == render_docs(documented_groups()), (
        f"docs/configuration.md is out of date: run `{REGENERATE_COMMAND}`"
    )


def test_every_declared_setting_has_a_row_with_its_default_and_bounds() -> None:
    documented = (ROOT / "docs" / "configuration.md").read_text()
    for setting in declared_settings().values():
        row = f"| `{setting.name}` | {setting.type_name} | `{setting.default_text}` |"
        assert row in documented, f"{setting.name} is missing from docs/configuration.md"
        assert setting.doc, f"{setting.name} has no doc"


def test_each_service_documents_its_settings() -> None:
    titles = [group.title for group in documented_groups()]
    for service in ("command_server", "query_server", "outbox_poller", "projector"):
        assert sum(service in title for title in titles) == 1, service
    assert len(declared_settings()) >= 57


def test_product_code_names_no_undeclared_variable() -> None:
    files = product_files()
    assert len(files) > 40, "the product packages moved; update PRODUCT"
    assert undeclared_variables(files, declared_settings()) == {}


def test_the_scan_finds_a_planted_undeclared_variable(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        'import os\n\nLIMIT = os.environ.get("CHRONOS_NOT_DECLARED_MAX", "1")\n'
        'PORT = os.environ.get("CHRONOS_COMMAND_METRICS_PORT")\n'
        "# Worker i gets CHRONOS_<prefix>_PROCESSES=1 and CHRONOS_REUSE_PORT=1.\n"
    )
    found = undeclared_variables([planted], declared_settings())
    assert found == {"CHRONOS_NOT_DECLARED_MAX": "planted.py:3"}
