"""The pages in Debian's Chromium: the PC shows a QR code, a phone pairs by opening its URL."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import Daemon
from support import skip_or_fail

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Launch headless Chromium through Playwright (never a downloaded browser)."""
    if not shutil.which(CHROMIUM):
        skip_or_fail("Chromium is not installed (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        skip_or_fail("Playwright is not installed (pip install playwright)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        await browser.close()


async def open_page(browser: Any, errors: list[str]) -> Any:
    """Open a fresh profile that accepts the self-signed certificate and records JS errors."""
    context = await browser.new_context(ignore_https_errors=True)
    page = await context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


async def test_phone_pairs_from_the_qr_url_and_the_pc_lists_it(
    daemon: Daemon, browser: Any
) -> None:
    """The pairing page shows a QR code; its URL pairs a phone; the PC's list shows the phone."""
    errors: list[str] = []
    pc = await open_page(browser, errors)
    await pc.goto(f"{daemon.url}/pairing")
    await pc.wait_for_selector("#code-body:not([hidden])")
    assert (await pc.get_attribute("#qr", "src") or "").startswith("data:image/png;base64,")
    url = await pc.text_content("#url")
    assert url is not None
    assert url.startswith(f"https://127.0.0.1:{daemon.port}/pair-confirm#t=")
    assert (await pc.text_content("#fingerprint")) == daemon.fingerprint
    assert "Expires in 1" in (await pc.text_content("#countdown") or "")

    phone = await open_page(browser, errors)
    await phone.goto(url)
    await phone.wait_for_selector("#pair-form:not([hidden])")
    assert "#" not in phone.url  # the token leaves the address bar at once
    assert "Test PC" in (await phone.text_content("#pair-title") or "")
    await phone.fill("#device-name", "Kitchen <b>tablet</b>")
    await phone.click("#pair")
    await phone.wait_for_selector("#done:not([hidden])")
    assert "Paired ✓" in (await phone.text_content("#done-message") or "")
    cookies = await phone.context.cookies()
    (cookie,) = [c for c in cookies if c["name"] == "lanpair_device"]
    assert cookie["httpOnly"]
    assert cookie["secure"]
    assert await phone.evaluate("document.cookie") == ""
    me = await phone.evaluate("fetch('/api/me').then(r => r.json())")
    assert me["device_name"] == "Kitchen <b>tablet</b>"

    await pc.click("#refresh")
    await pc.wait_for_selector(".device-name")
    assert (await pc.text_content(".device-name")) == "Kitchen <b>tablet</b>"
    assert await pc.locator(".device-name b").count() == 0
    assert errors == []


async def test_a_used_code_tells_the_phone_to_ask_for_a_new_one(
    daemon: Daemon, browser: Any
) -> None:
    """Opening an already used QR URL shows the server's reason and what to do."""
    errors: list[str] = []
    pc = await open_page(browser, errors)
    await pc.goto(f"{daemon.url}/pairing")
    await pc.wait_for_selector("#code-body:not([hidden])")
    url = await pc.text_content("#url")
    for attempt in range(2):
        phone = await open_page(browser, [])
        await phone.goto(url)
        await phone.wait_for_selector("#pair-form:not([hidden])")
        await phone.click("#pair")
        if attempt == 0:
            await phone.wait_for_selector("#done:not([hidden])")
    await phone.wait_for_selector("#error:not([hidden])")
    assert "Ask the PC for a new QR code" in (await phone.text_content("#error") or "")


async def test_without_accepting_the_certificate_the_page_does_not_load(
    daemon: Daemon, browser: Any
) -> None:
    """The self-signed certificate is not silently trusted by a browser."""
    context = await browser.new_context()
    page = await context.new_page()
    with pytest.raises(Exception, match="ERR_CERT_AUTHORITY_INVALID"):
        await page.goto(f"{daemon.url}/pair-confirm")


async def test_a_phone_sends_photos_from_the_explorer_and_the_pc_sees_them_live(
    daemon: Daemon, browser: Any, tmp_path: Any
) -> None:
    """After pairing, the phone's gallery page uploads with progress; the PC's updates live."""
    from PIL import Image

    errors: list[str] = []
    pc = await open_page(browser, errors)
    await pc.goto(f"{daemon.url}/explorer")
    await pc.wait_for_selector("#app:not([hidden])")
    await pc.wait_for_selector(".live-on")

    code_page = await open_page(browser, errors)
    await code_page.goto(f"{daemon.url}/pairing")
    await code_page.wait_for_selector("#code-body:not([hidden])")
    phone = await open_page(browser, errors)
    await phone.goto(await code_page.text_content("#url") or "")
    await phone.wait_for_selector("#pair-form:not([hidden])")
    await phone.click("#pair")
    await phone.wait_for_selector("#done:not([hidden])")
    await phone.click("#open-gallery")
    await phone.wait_for_selector("#app:not([hidden])")

    photo = tmp_path / "beach.jpg"
    Image.new("RGB", (1200, 900), "orange").save(photo, "JPEG")
    await phone.set_input_files("#files", str(photo))
    await phone.wait_for_selector(".upload-state:text('Sent ✓')")
    await phone.wait_for_selector(".tile[title='beach.jpg']")

    await pc.wait_for_selector(".tile[title='beach.jpg']")  # pushed, not fetched
    await pc.click(".tile[title='beach.jpg']")
    await pc.wait_for_selector("#viewer[open] img")
    assert errors == []
