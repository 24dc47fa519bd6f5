"""Helpers for the browser tests: Debian's chromium, driven by Playwright, and how to launch it.

``CHROMIUM`` is ``$HOTPLUMB_CHROMIUM`` or ``chromium`` on the PATH (``None`` if
neither); ``SKIP_REASON`` says what is missing, or is ``None`` when both the
browser and the playwright package are there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Browser, Playwright

__all__ = ["CHROMIUM", "FLAGS", "SKIP_REASON", "launch"]

CHROMIUM = os.environ.get("HOTPLUMB_CHROMIUM") or shutil.which("chromium")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

SKIP_REASON = (
    None
    if CHROMIUM is not None and importlib.util.find_spec("playwright") is not None
    else "the browser tests need Debian's chromium (apt-get install -y chromium) and the "
    "playwright package (the dev extra)"
)


async def launch(p: Playwright) -> Browser:
    """Launch headless chromium with the flags the tests use."""
    assert CHROMIUM is not None, SKIP_REASON
    return await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
