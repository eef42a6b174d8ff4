"""The HTTP surface: the only package that imports aiohttp.web."""

from lanpair.models import Site
from lanpair.server.app import Services, create_app
from lanpair.server.runner import add_lifecycle, serving

__all__ = ["Services", "Site", "add_lifecycle", "create_app", "serving"]
