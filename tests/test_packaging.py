"""The wheel carries the web pages and the README keeps its promises."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

from lanpair.config import settings_markdown
from lanpair.paths import web_dir

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    "pairing.html",
    "pairing.js",
    "pair-confirm.html",
    "pair-confirm.js",
    "explorer.html",
    "explorer.js",
    "admin.html",
    "admin.js",
    "api.js",
    "events.js",
    "style.css",
]


def test_wheel_contains_the_web_pages(tmp_path: Path) -> None:
    """A built wheel ships web/ inside the package, so `pip install .` serves the pages."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        timeout=300,
        check=True,
    )
    (wheel,) = tmp_path.glob("lanpair-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for page in PAGES:
        assert f"lanpair/web/{page}" in names


def test_checkout_serves_the_same_pages() -> None:
    """In a checkout the pages come from the top-level web/ folder."""
    for page in PAGES:
        assert (web_dir() / page).is_file()


def test_readme_settings_table_matches_the_settings() -> None:
    """README's settings table is exactly what the settings table generates."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- settings -->\n(.*?)\n<!-- /settings -->", readme, re.S)
    assert block is not None
    assert block[1] == settings_markdown()


def test_readme_has_the_two_setup_commands() -> None:
    """README shows one command that runs the daemon and one that runs the tests."""
    readme = (ROOT / "README.md").read_text()
    for marker in ("run-command", "test-command"):
        block = re.search(rf"<!-- {marker} -->\n```sh\n(.+?)\n```\n<!-- /{marker} -->", readme)
        assert block is not None, marker
    assert "lanpair serve" in readme
