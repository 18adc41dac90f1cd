"""The distribution's Chromium, driven by Playwright, for the console's browser tests and
screenshots. Never a downloaded browser build: Playwright launches /usr/bin/chromium."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHROMIUM_PATH = Path(os.environ.get("CHRONOS_CHROMIUM", "/usr/bin/chromium"))
# Headless, and without the background traffic (updates, sync, safe browsing, QUIC
# probes) that Chromium otherwise sends into a closed network.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = {"width": 1280, "height": 800}


def chromium_missing() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    if not CHROMIUM_PATH.exists():
        return f"no Chromium at {CHROMIUM_PATH} (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright is not installed (scripts/setup installs the dev extra)"
    return None


def launch(playwright: Any) -> Any:
    """A headless Chromium from the distribution's package."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM_PATH), headless=True, args=list(CHROMIUM_ARGS)
    )
