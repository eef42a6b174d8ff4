"""The HTML pages: static files from web/, with access decided per page."""

from __future__ import annotations

from aiohttp import web

from lanpair.paths import web_dir
from lanpair.server.middleware import Access, access, is_owner_request

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


@routes.get("/pair-confirm")
@access(Access.ANYONE)
async def pair_confirm(request: web.Request) -> web.StreamResponse:
    """Show the phone's confirm page (it reads the code from the URL fragment)."""
    return _page("pair-confirm.html")


def _page(name: str) -> web.FileResponse:
    response = web.FileResponse(web_dir() / name)
    response.headers["Cache-Control"] = "no-cache"
    return response
