"""Typed keys for application and request state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from lanpair.models import Caller

if TYPE_CHECKING:
    from lanpair.server.app import Services

SERVICES_KEY: web.AppKey[Services] = web.AppKey("services")
CALLER_KEY: web.RequestKey[Caller] = web.RequestKey("caller", Caller)
