"""Typed keys for application and request state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from lanpair.models import Caller

if TYPE_CHECKING:
    from lanpair.events import EventHub
    from lanpair.library import Library
    from lanpair.server.api_tus import TusStore
    from lanpair.server.app import Services
    from lanpair.server.codes import CodeMint

SERVICES_KEY: web.AppKey[Services] = web.AppKey("services")
MINT_KEY: web.AppKey[CodeMint] = web.AppKey("mint")
LIBRARY_KEY: web.AppKey[Library] = web.AppKey("library")
TUS_KEY: web.AppKey[TusStore] = web.AppKey("tus")
HUB_KEY: web.AppKey[EventHub] = web.AppKey("hub")
SOCKETS_KEY: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")
CALLER_KEY: web.RequestKey[Caller] = web.RequestKey("caller", Caller)
