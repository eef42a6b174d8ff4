"""The shape of the package: every module imports alone, and heavy parts load only when used."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lanpair

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(lanpair.__path__, "lanpair.")
    if info.name != "lanpair.__main__"
)


def loaded_after(statement: str) -> set[str]:
    """Return the top-level modules a fresh interpreter has loaded after ``statement``."""
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return {name.split(".")[0] for name in out.split()}


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module: str) -> None:
    """Each module imports in a fresh interpreter (no import cycles)."""
    subprocess.run([sys.executable, "-c", f"import {module}"], timeout=60, check=True)


def test_server_needs_neither_watchdog_nor_zeroconf() -> None:
    """The HTTP layer never pulls in the file watcher or mDNS."""
    loaded = loaded_after("import lanpair.server")
    assert not loaded & {"watchdog", "zeroconf"}


def test_cli_loads_no_server_stack_until_a_command_needs_it() -> None:
    """`lanpair --help` starts fast: no aiohttp, Pillow or cryptography at import."""
    loaded = loaded_after("import lanpair.cli")
    assert not loaded & {"aiohttp", "PIL", "cryptography", "segno", "watchdog", "zeroconf"}


def imports_of(path: Path) -> set[str]:
    """Return every module a source file imports (absolute names, from statements included)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_client_side_never_loads_the_server_stack() -> None:
    """push and pull start as fast as discover: the client side is the standard library."""
    loaded = loaded_after("import lanpair.transfer_commands, lanpair.push, lanpair.pull")
    assert not loaded & {"aiohttp", "PIL", "cryptography", "segno", "watchdog", "zeroconf"}


def test_only_the_server_package_imports_aiohttp_web() -> None:
    """aiohttp.web lives in lanpair/server/ alone."""
    package = Path(lanpair.__file__).parent
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "server" not in path.relative_to(package).parts
        and any(
            name == "aiohttp.web" or name.startswith("aiohttp.web_") for name in imports_of(path)
        )
    ]
    assert offenders == []
