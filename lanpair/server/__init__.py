"""The HTTP surface: the only package that imports aiohttp.web."""

from lanpair.server.app import Services, Site, create_app

__all__ = ["Services", "Site", "create_app"]
