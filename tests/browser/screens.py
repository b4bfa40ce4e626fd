"""Where screenshots go: docs/screenshots/ when UPDATE_SCREENSHOTS=1 (to refresh docs/dashboard.md's pictures),
else the test's temporary folder (the pages are still rendered and checked)."""

from __future__ import annotations

import os
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def screenshot_dir(tmp_path: Path) -> Path:
    target = DOCS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    return target
