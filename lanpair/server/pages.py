"""The HTML pages: static files from web/, with access decided per page."""

from __future__ import annotations

from aiohttp import web

from lanpair.paths import web_dir
from lanpair.server.keys import SERVICES_KEY
from lanpair.server.middleware import Access, access, caller, is_owner_request, set_device_cookie

routes = web.RouteTableDef()


@routes.get("/")
@access(Access.ANYONE)
async def index(request: web.Request) -> web.StreamResponse:
    """Send the PC's own browser to the pairing page, anyone else to the confirm page."""
    raise web.HTTPFound("/pairing" if is_owner_request(request) else "/pair-confirm")


@routes.get("/pairing")
@access(Access.OWNER)
async def pairing(request: web.Request) -> web.StreamResponse:
    """Show the owner's pairing page: QR code and paired devices."""
    return _page("pairing.html")


@routes.get("/admin")
@access(Access.OWNER)
async def admin(request: web.Request) -> web.StreamResponse:
    """Show the owner's overview: devices, uploads in progress, recent arrivals."""
    return _page("admin.html")


@routes.get("/pair-confirm")
@access(Access.ANYONE)
async def pair_confirm(request: web.Request) -> web.StreamResponse:
    """Show the phone's confirm page (it reads the code from the URL fragment)."""
    return _page("pair-confirm.html")


@routes.get("/explorer")
@access(Access.ANYONE)
async def explorer(request: web.Request) -> web.StreamResponse:
    """Show the gallery and the upload button (the page asks the API who is calling)."""
    return _page("explorer.html")


@routes.get("/explorer/{token}")
@access(Access.DEVICE)
async def explorer_link(request: web.Request) -> web.StreamResponse:
    """The seed's link with the token in it: keep the pairing in a cookie, drop the token.

    Not when another site sent the browser here, nor on the PC itself: a paired guest's
    link would otherwise make the owner's browser that guest (login CSRF), its uploads
    landing in the guest's folder and the owner's pages refused.
    """
    who = caller(request)
    response = web.HTTPFound("/explorer")
    sent_by_another_site = request.headers.get("Sec-Fetch-Site") == "cross-site"
    if who.device is not None and not sent_by_another_site and not is_owner_request(request):
        left = who.device.expires_at - request.app[SERVICES_KEY].clock.now()
        set_device_cookie(response, request, request.match_info["token"], left.total_seconds())
    raise response


def _page(name: str) -> web.FileResponse:
    response = web.FileResponse(web_dir() / name)
    response.headers["Cache-Control"] = "no-cache"
    return response
