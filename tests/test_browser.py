"""The pages in Debian's Chromium: the PC shows a QR code, a phone pairs by opening its URL."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PAIRING_TTL_S, Daemon, StartDaemon
from support import skip_or_fail
from test_api import bearer, confirm, pair, status_of
from test_library import jpeg, upload

from lanpair.server.keys import HUB_KEY, SERVICES_KEY

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
    "--host-resolver-rules=MAP testhost.local 127.0.0.1",  # the test daemon's .local name
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


async def open_live(
    browser: Any, url: str, errors: list[str], *, token: str | None = None
) -> tuple[Any, list[str]]:
    """Open ``url`` (as the paired device of ``token``, if given) once its events are live.

    Returns the page and the list of WebSocket URLs it opens, which grows as it reconnects.
    """
    page = await open_page(browser, errors)
    if token is not None:  # the cookie confirm would have set
        cookie = {"name": "lanpair_device", "value": token, "url": url, "sameSite": "Strict"}
        await page.context.add_cookies([{**cookie, "httpOnly": True, "secure": True}])
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await page.goto(url)
    await page.wait_for_selector(".live-on")
    return page, sockets


async def pair_in_browser(browser: Any, daemon: Daemon, errors: list[str]) -> Any:
    """Show a code on the PC's pairing page, open its URL as a phone and pair; return the phone."""
    code_page = await open_page(browser, errors)
    await code_page.goto(f"{daemon.url}/pairing")
    await code_page.wait_for_selector("#code-body:not([hidden])")
    phone = await open_page(browser, errors)
    await phone.goto(await code_page.text_content("#url") or "")
    await phone.wait_for_selector("#pair-form:not([hidden])")
    await phone.click("#pair")
    await phone.wait_for_selector("#done:not([hidden])")
    return phone


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

    await pc.wait_for_selector(".device-name")  # pushed: no reload, no click
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

    phone = await pair_in_browser(browser, daemon, errors)
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


async def test_the_viewer_on_a_phone_keeps_long_names_in_and_offers_what_it_cannot_show(
    daemon: Daemon, browser: Any
) -> None:
    """On a 390 px phone: a long name is cut short, never widening the viewer past the
    screen (its buttons went off it); a TIFF, which browsers cannot show, offers a download;
    the arrow keys still work once a button reaching the end has gone."""
    import io

    from PIL import Image

    tiff = io.BytesIO()
    Image.new("RGB", (64, 48), "navy").save(tiff, "TIFF")
    long_name = "WhatsApp Image 2024-03-15 at 14.22.33 from the family group chat.jpeg"
    phone = await pair(daemon, "Phone", "viewer-phone")
    for n, (name, content) in enumerate(
        [
            ("last.jpg", jpeg(color="red")),
            ("scan.tif", tiff.getvalue()),
            (long_name, jpeg(color="green")),
        ]
    ):
        status, body = await upload(
            daemon, phone["device_token"], (name, content), modified_ms=(n + 1) * 10**12
        )
        assert status == 200, body
    errors: list[str] = []
    context = await browser.new_context(
        ignore_https_errors=True, viewport={"width": 390, "height": 844}
    )
    page = await context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"{daemon.url}/explorer")

    await page.click(f".tile[title='{long_name}']")
    await page.wait_for_selector("#viewer[open] img")
    parts = ("viewer-media", "viewer-name", "viewer-next")
    boxes = {part: await page.locator(f"#{part}").bounding_box() for part in parts}
    assert all(b["x"] >= 0 and b["x"] + b["width"] <= 390 for b in boxes.values()), boxes
    assert boxes["viewer-next"]["x"] > 195  # on the right, where it belongs
    await page.click("#viewer-next")
    await page.wait_for_selector(".viewer-file-note:text('cannot show this image')")
    assert await page.get_attribute("#viewer-media a", "download") == "scan.tif"
    await page.click("#viewer-next")  # the last item: Next goes, the focus stays inside
    await page.wait_for_selector("#viewer-next:disabled", state="attached")
    await page.keyboard.press("ArrowLeft")

    assert await page.text_content("#viewer-name") == "scan.tif"
    assert errors == []
    await context.close()


async def width_becomes(page: Any, selector: str, width: int, timeout_s: float = 15) -> None:
    """Wait until the image at ``selector`` is loaded at ``width`` pixels (polled from here:
    the pages' CSP forbids the eval that wait_for_function's string predicates need)."""
    for _ in range(int(timeout_s / 0.05)):
        found = await page.query_selector(selector)
        if found is not None and await found.evaluate("img => img.naturalWidth") == width:
            return
        await page.wait_for_timeout(50)
    raise AssertionError(f"{selector} never became {width} px wide")


async def test_a_photo_edited_on_the_pc_shows_its_new_picture_without_a_reload(
    daemon: Daemon, browser: Any
) -> None:
    """A photo changed in place by hand keeps its id and URLs: the open gallery still shows
    the new picture (it once kept the old one until the page was reloaded)."""
    from PIL import Image

    folder = daemon.library.paths.root / "Camera"
    folder.mkdir()
    errors: list[str] = []
    page, _ = await open_live(browser, f"{daemon.url}/explorer", errors)
    Image.new("RGB", (64, 48), "red").save(folder / "edit.jpg", "JPEG")
    tile = ".tile[title='edit.jpg'] img"
    await width_becomes(page, tile, 64)

    Image.new("RGB", (48, 64), "blue").save(folder / "edit.jpg", "JPEG")  # turned, in place

    await width_becomes(page, tile, 48)
    await page.click(".tile[title='edit.jpg']")
    await width_becomes(page, "#viewer-media img", 48)
    assert errors == []


async def test_a_live_arrival_takes_its_place_by_date(daemon: Daemon, browser: Any) -> None:
    """The gallery is newest taken first: a photo that arrives live with an old date goes
    where a reload would show it, not to the top (it once went to the top whatever its date)."""
    phone = await pair(daemon, "Phone", "order-phone")
    year_ms = 365 * 24 * 3600 * 1000
    for name, color, years in (("new.jpg", "red", 56), ("mid.jpg", "blue", 55)):
        await upload(
            daemon, phone["device_token"], (name, jpeg(color=color)), modified_ms=years * year_ms
        )
    errors: list[str] = []
    page, _ = await open_live(browser, f"{daemon.url}/explorer", errors)
    await page.wait_for_selector(".tile[title='mid.jpg']")

    for name, color, years in (("old.jpg", "green", 50), ("between.jpg", "gray", 55.5)):
        await upload(
            daemon,
            phone["device_token"],
            (name, jpeg(color=color)),
            modified_ms=int(years * year_ms),
        )
        await page.wait_for_selector(f".tile[title='{name}']")

    order = await page.eval_on_selector_all(".tile", "tiles => tiles.map(t => t.title)")
    assert order == ["new.jpg", "between.jpg", "mid.jpg", "old.jpg"]
    assert errors == []


async def test_next_in_the_viewer_goes_on_into_the_next_page(daemon: Daemon, browser: Any) -> None:
    """At the last item loaded, with more in the gallery, Next loads the next page and shows
    what follows (it was disabled there, as if the gallery ended)."""
    phone = await pair(daemon, "Phone", "pages-phone")
    files = [(f"note-{n:02}.txt", f"note {n}".encode()) for n in range(61)]
    await upload(daemon, phone["device_token"], *files)
    errors: list[str] = []
    page, _ = await open_live(browser, f"{daemon.url}/explorer", errors)
    await page.wait_for_selector("#more:not([hidden])")
    titles = await page.eval_on_selector_all(".tile", "tiles => tiles.map(t => t.title)")
    assert len(titles) == 60

    await page.click(f".tile[title='{titles[-1]}']")
    await page.click("#viewer-next")
    await page.wait_for_selector(".tile >> nth=60", state="attached")

    shown = await page.text_content("#viewer-name")
    assert shown not in titles
    assert shown in {name for name, _ in files}
    assert errors == []


async def test_uploads_waiting_in_line_stop_once_the_pairing_has_ended(
    daemon: Daemon, browser: Any, tmp_path: Path
) -> None:
    """Five photos chosen after the pairing ended: the first answers say so, the page turns
    to 'not paired', and the photos still waiting are not sent (they went on, one 401 each)."""
    device = await pair(daemon, "Phone", "ended-phone")
    errors: list[str] = []
    phone, _ = await open_live(
        browser, f"{daemon.url}/explorer", errors, token=device["device_token"]
    )
    daemon.clock.advance(PAIRING_TTL_S + 1)
    photos = []
    for n in range(5):
        path = tmp_path / f"late-{n}.jpg"
        path.write_bytes(jpeg(color=("red", "green", "blue", "gray", "navy")[n]))
        photos.append(str(path))

    await phone.set_input_files("#files", photos)
    await phone.wait_for_selector("#not-paired:not([hidden])")

    states = await phone.eval_on_selector_all(".upload-state", "s => s.map(e => e.textContent)")
    assert states.count("Not sent: this device is no longer paired.") == 2
    assert not any(state.startswith(("Sent", "Waiting", "Sending")) for state in states)


async def test_the_pairing_page_lists_a_new_device_live_and_shows_a_fresh_code(
    daemon: Daemon, browser: Any
) -> None:
    """A phone pairs with the code on screen: the list gains it; a new code replaces the used."""
    errors: list[str] = []
    pc, _ = await open_live(browser, f"{daemon.url}/pairing", errors)
    await pc.wait_for_selector("#code-body:not([hidden])")
    assert await pc.locator("#refresh").count() == 0
    assert await pc.locator("nav a[href='/admin']").count() == 1
    assert await pc.is_visible("#devices-empty")
    used = await pc.text_content("#url") or ""
    token = used.split("#t=", 1)[1].split("&", 1)[0]

    async with daemon.session() as phone:
        confirmed = await confirm(phone, token, "Garden phone", "garden")
        assert confirmed.status == 200
        device_id = (await confirmed.json())["device_id"]
    row = pc.locator(".device", has_text="Garden phone")
    await row.wait_for()
    assert await row.locator(".presence-off").text_content() == "offline"
    await pc.wait_for_selector("#paired-now:has-text('Garden phone is paired')")
    await pc.wait_for_function(
        "used => document.getElementById('url').textContent !== used", arg=used
    )
    assert not await pc.is_visible("#devices-empty")

    hub = daemon.app[HUB_KEY]
    hub.publish("device.online", {"device_id": device_id, "device_name": "Garden phone"})
    await row.locator(".presence-on").wait_for()
    hub.publish("device.synced", {"device_id": device_id, "last_sync": "2024-05-01T10:00:00Z"})
    await row.locator("dt:text-is('Last sync') + dd:not(:text-is('—'))").wait_for()
    hub.publish("device.offline", {"device_id": device_id, "device_name": "Garden phone"})
    await row.locator(".presence-off").wait_for()
    assert errors == []


async def test_the_admin_page_shows_devices_uploads_in_progress_and_new_arrivals(
    daemon: Daemon, browser: Any
) -> None:
    """The owner's overview lists devices, draws upload progress and adds arrivals as they land."""
    phone = await pair(daemon, "Hall <i>phone", "hall")
    errors: list[str] = []
    pc, _ = await open_live(browser, f"{daemon.url}/admin", errors)
    row = pc.locator("#devices .device", has_text="Hall <i>phone")
    await row.wait_for()
    assert await pc.locator("#devices i").count() == 0
    assert await row.locator(".presence").text_content() == "offline"
    assert await row.locator("dt:text-is('Files') + dd").text_content() == "0"
    assert await pc.locator("nav a[href='/pairing']").count() == 1
    assert await pc.is_visible("#uploads-empty")
    assert await pc.is_visible("#arrivals-empty")

    hub = daemon.app[HUB_KEY]
    progress = {
        "upload": "up-1",
        "device_id": phone["device_id"],
        "device_name": "Hall <i>phone",
        "name": "<b>clip</b>.mp4",
    }
    hub.publish(
        "upload.progress", {**progress, "bytes": 250_000, "total": 1_000_000, "state": "sending"}
    )
    bar = pc.locator("#uploads .upload", has_text="<b>clip</b>.mp4")
    await bar.wait_for()
    assert await bar.locator("progress").get_attribute("value") == "0.25"
    assert "250 KB of 1.0 MB" in (await bar.text_content() or "")
    hub.publish(
        "upload.progress", {**progress, "bytes": 600_000, "total": None, "state": "sending"}
    )
    await pc.wait_for_function(
        "() => !document.querySelector('#uploads progress').hasAttribute('value')"
    )
    hub.publish(
        "upload.progress", {**progress, "bytes": 1_000_000, "total": 1_000_000, "state": "done"}
    )
    await bar.locator(".upload-state:text('Saved ✓')").wait_for()
    await bar.wait_for(state="detached", timeout=10_000)
    assert await pc.is_visible("#uploads-empty")

    status, body = await upload(daemon, phone["device_token"], ("sunset.jpg", jpeg(640, 480)))
    assert status == 200, body
    sent = pc.locator("#uploads .upload", has_text="sunset.jpg")  # the daemon's own progress
    await sent.locator(".upload-state:text('Saved ✓')").wait_for()
    assert "from Hall <i>phone" in (await sent.text_content() or "")
    arrival = pc.locator("#arrivals .arrival", has_text="sunset.jpg")
    await arrival.wait_for()
    file_id = body["files"][0]["id"]
    assert await arrival.get_attribute("href") == f"/files/{file_id}"
    assert await arrival.locator("img").get_attribute("src") == f"/thumbs/{file_id}"
    assert "Hall <i>phone" in (await arrival.text_content() or "")
    await row.locator("dt:text-is('Files') + dd:text-is('1')").wait_for()
    await row.locator(".presence-on").wait_for()  # it just made a request
    assert errors == []


async def test_revoking_from_the_admin_page_ends_the_phones_session(
    daemon: Daemon, browser: Any
) -> None:
    """Revoke on /admin drops the device from the list and tells the phone's open page at once."""
    device = await pair(daemon, "Old phone", "old")
    errors: list[str] = []
    phone, _ = await open_live(
        browser, f"{daemon.url}/explorer", errors, token=device["device_token"]
    )
    pc, _ = await open_live(browser, f"{daemon.url}/admin", errors)
    await pc.wait_for_selector("#devices .device:has-text('Old phone')")
    pc.on("dialog", lambda dialog: dialog.accept())
    await pc.click("button[aria-label='Revoke Old phone']")
    await pc.wait_for_selector("#devices-empty:not([hidden])")
    await phone.wait_for_selector("#not-paired:not([hidden])")
    assert await phone.is_hidden("#app")
    assert errors == []


async def test_lan_peers_do_not_get_the_admin_page(lan_daemon: Daemon) -> None:
    """/admin is the owner's: a paired phone on the LAN gets 403 there, the owner the page."""
    async with lan_daemon.session() as owner, owner.get("/admin") as response:
        assert response.status == 200
        assert "/static/admin.js" in await response.text()
    device = await pair(lan_daemon)
    async with lan_daemon.session(
        source="127.0.0.2", headers=bearer(device["device_token"])
    ) as peer:
        assert await status_of(peer, "GET", "/admin") == 403


async def test_the_explorer_catches_up_after_its_socket_drops(daemon: Daemon, browser: Any) -> None:
    """Dropped as too slow it reconnects with since= and gets what it missed; after the daemon's
    1001 it reconnects and reloads the gallery."""
    sender = await pair(daemon, "Sender", "sender")
    watcher = await pair(daemon, "Watcher", "watcher")
    errors: list[str] = []
    page, sockets = await open_live(
        browser, f"{daemon.url}/explorer", errors, token=watcher["device_token"]
    )
    await upload(daemon, sender["device_token"], ("first.jpg", jpeg()))
    await page.wait_for_selector(".tile[title='first.jpg']")  # another client's upload, pushed

    hub = daemon.app[HUB_KEY]
    hub.close_all(4408)
    await upload(daemon, sender["device_token"], ("missed.jpg", jpeg(color="blue")))
    await page.wait_for_selector(".tile[title='missed.jpg']")
    assert len(sockets) == 2
    assert "?since=" in sockets[1]

    hub.close_all(1001)
    await upload(daemon, sender["device_token"], ("after-restart.jpg", jpeg(color="green")))
    await page.wait_for_selector(".tile[title='after-restart.jpg']")
    await page.wait_for_selector(".live-on")
    assert len(sockets) == 3
    assert "since" not in sockets[2]
    assert await page.locator(".tile").count() == 3
    assert errors == []


async def test_the_phone_follows_the_bookmark_offer_to_the_local_name_and_stays_paired(
    daemon: Daemon, browser: Any
) -> None:
    """Paired on the IP, the phone is offered <host>.local; the link pairs it there too, the
    hand-off leaves the address bar, the gallery opens, and the IP origin stays paired."""
    local = f"https://testhost.local:{daemon.port}"
    errors: list[str] = []
    phone = await pair_in_browser(browser, daemon, errors)
    await phone.wait_for_selector("#bookmark:not([hidden])")
    link = phone.locator("#bookmark-link")
    assert await link.text_content() == f"{local}/explorer"
    assert (await link.get_attribute("href") or "").startswith(f"{local}/pair-confirm#handoff=")

    await link.click()
    await phone.wait_for_url(f"{local}/explorer")
    await phone.wait_for_selector("#app:not([hidden])")
    me = await phone.evaluate("fetch('/api/me').then(r => r.json())")
    assert me["owner"] is False  # the cookie speaks, not the loopback address
    assert "#" not in phone.url
    assert await phone.is_hidden("#bookmark-offer")  # on the .local name: nothing to offer
    cookies = {c["domain"]: c for c in await phone.context.cookies()}
    assert set(cookies) == {"127.0.0.1", "testhost.local"}
    assert cookies["testhost.local"]["value"] != cookies["127.0.0.1"]["value"]
    assert cookies["testhost.local"]["httpOnly"]

    await phone.goto(f"{daemon.url}/explorer")  # the IP origin still works
    await phone.wait_for_selector("#app:not([hidden])")
    assert me == await phone.evaluate("fetch('/api/me').then(r => r.json())")
    assert await phone.is_visible("#bookmark-offer")
    await phone.click("#bookmark-offer a")  # the offer again, from the gallery
    await phone.wait_for_selector("#bookmark:not([hidden])")
    await phone.click("#bookmark-link")
    await phone.wait_for_url(f"{local}/explorer")
    await phone.wait_for_selector("#app:not([hidden])")
    assert errors == []


async def test_a_spent_handoff_link_on_an_unpaired_browser_says_why(
    make_daemon: StartDaemon, browser: Any
) -> None:
    """A hand-off link opened again in another (unpaired, not the PC's) browser says why."""
    daemon = await make_daemon(owner_addresses=frozenset())  # no browser here is the owner
    code = await daemon.app[SERVICES_KEY].pairing.generate()
    async with daemon.session() as phone:
        assert (await confirm(phone, code.token)).status == 200
        async with phone.post("/api/pairing/handoff", json={}) as response:
            url = (await response.json())["url"]
    first = await open_page(browser, [])
    await first.goto(url)
    await first.wait_for_url("**/explorer")
    await first.wait_for_selector("#app:not([hidden])")
    errors: list[str] = []
    second = await open_page(browser, errors)
    await second.goto(url)
    await second.wait_for_selector("#error:not([hidden])")
    assert "already used" in (await second.text_content("#error") or "")
    assert "#" not in second.url
    assert await second.is_hidden("#handing-over")
