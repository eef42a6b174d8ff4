"""The HTTP surface: the only package that imports aiohttp.web."""

from lanpair.models import Site
from lanpair.server.app import Services, create_app

__all__ = ["Services", "Site", "create_app"]
