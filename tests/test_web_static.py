"""The pages' source as text: no polling, user data never parsed as HTML, one module a page."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"

TIMER_RE = re.compile(r"\b(setTimeout|setInterval)\s*\(")
# Every timer in the pages, and why it is not a refetch on a timer. A new one needs a line here.
ALLOWED_TIMERS = {
    ("events.js", "setTimeout"): 2,  # reconnect after a drop (backoff); debounce a burst of events
    ("pairing.js", "setInterval"): 1,  # the QR code's 1 s countdown display
    ("pairing.js", "setTimeout"): 1,  # "Copied ✓" turns back into "Copy link"
    ("admin.js", "setTimeout"): 1,  # a finished upload's row leaves the list after a moment
}
HTML_SINKS_RE = re.compile(
    r"\.(innerHTML|outerHTML)\b|\binsertAdjacentHTML\s*\(|\bdocument\.write(ln)?\s*\(|"
    r"\bcreateContextualFragment\s*\(|\bDOMParser\b|\beval\s*\(|\bnew\s+Function\s*\("
)
MODULE_RE = re.compile(r'<script type="module" src="/static/([\w.-]+\.js)"></script>')


def scripts() -> dict[str, str]:
    """Return every page script's text by file name."""
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(WEB.glob("*.js"))}


def test_timers_are_only_the_allowed_ones() -> None:
    """No page refetches on a timer: each setTimeout/setInterval is one of the listed few."""
    found = Counter(
        (name, match[1]) for name, text in scripts().items() for match in TIMER_RE.finditer(text)
    )
    assert dict(found) == ALLOWED_TIMERS


def test_only_events_js_opens_a_websocket() -> None:
    """Every page gets its live events through the one shared module."""
    opened = {name: text.count("new WebSocket(") for name, text in scripts().items()}
    assert {name: n for name, n in opened.items() if n} == {"events.js": 1}


def test_no_page_script_parses_strings_as_html_or_code() -> None:
    """User data reaches the DOM through textContent and attributes, never an HTML or JS sink."""
    for name, text in scripts().items():
        assert not HTML_SINKS_RE.search(text), f"{name}: {HTML_SINKS_RE.search(text)}"


def test_each_page_loads_its_own_module_and_no_inline_script() -> None:
    """One HTML page, one ES module of the same name; no inline script or handler (CSP)."""
    pages = sorted(WEB.glob("*.html"))
    assert {page.name for page in pages} >= {"admin.html", "explorer.html", "pairing.html"}
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert MODULE_RE.findall(html) == [f"{page.stem}.js"], page.name
        assert (WEB / f"{page.stem}.js").is_file()
        assert html.count("<script") == 1, page.name
        assert not re.search(r"\son[a-z]+\s*=", html), page.name


def test_module_imports_name_files_that_exist() -> None:
    """Every `from './x.js'` points at a shipped file (there is no build step to catch it)."""
    for name, text in scripts().items():
        for target in re.findall(r"from '\./([\w.-]+\.js)'", text):
            assert (WEB / target).is_file(), f"{name} imports {target}"
