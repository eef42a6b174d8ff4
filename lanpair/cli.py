"""The `lanpair` command: argparse, one dispatcher from errors to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lanpair import __version__
from lanpair.config import SETTINGS, Settings, load
from lanpair.errors import (
    BadPairingLink,
    BadRequest,
    DaemonNotRunning,
    LanpairError,
    NotPaired,
    PairingError,
    PinMismatch,
    TransferIncomplete,
    UnknownPC,
    Unreachable,
)

if TYPE_CHECKING:
    from lanpair.daemon import Ready
    from lanpair.models import Device

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_UNREACHABLE, EXIT_INCOMPLETE, EXIT_REFUSED, EXIT_PIN_MISMATCH = 3, 4, 5, 6
# The first matching class decides; any other LanpairError exits EXIT_ERROR.
EXIT_CODES: tuple[tuple[type[LanpairError], int], ...] = (
    (PinMismatch, EXIT_PIN_MISMATCH),
    (NotPaired, EXIT_REFUSED),
    (PairingError, EXIT_REFUSED),
    (Unreachable, EXIT_UNREACHABLE),
    (TransferIncomplete, EXIT_INCOMPLETE),
    (UnknownPC, EXIT_USAGE),
    (BadPairingLink, EXIT_USAGE),
)
Command = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one lanpair command; return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load(cli=_given_settings(args), environ=os.environ, config_path=args.config)
        command: Command = args.run
        return command(args, settings)
    except LanpairError as exc:
        print(f"lanpair: error: {exc.message}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def exit_code(error: LanpairError) -> int:
    """Return the exit status for an error (EXIT_CODES, else EXIT_ERROR)."""
    return next((code for kind, code in EXIT_CODES if isinstance(error, kind)), EXIT_ERROR)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lanpair",
        description="Photos and files from your phone to this PC over the local network.",
    )
    parser.add_argument("--version", action="version", version=f"lanpair {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=_path,
        metavar="FILE",
        help="TOML settings file (default: ~/.config/lanpair/config.toml)",
    )

    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="run the daemon",
        description="Run the lanpair daemon. Every setting can also come from LANPAIR_<NAME> "
        "or the TOML file.",
    )
    for setting in SETTINGS:
        _add_setting(serve, setting.name)
    serve.set_defaults(run=_serve)

    devices = commands.add_parser("devices", parents=[common], help="list paired devices")
    _add_setting(devices, "data_dir")
    devices.add_argument(
        "--json", action="store_true", help="print JSON keyed by device id (no tokens)"
    )
    devices.set_defaults(run=_devices)

    revoke = commands.add_parser("revoke", parents=[common], help="revoke a paired device")
    _add_setting(revoke, "data_dir")
    revoke.add_argument("device_id", help="the device's id (dev_…), from `lanpair devices`")
    revoke.set_defaults(run=_revoke)

    qr = commands.add_parser("qr", parents=[common], help="show a pairing QR code in this terminal")
    _add_setting(qr, "data_dir")
    qr.set_defaults(run=_qr)
    _add_client_commands(commands, common)
    return parser


def _add_client_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add discover, pair, push, pull and status: this machine as a client of a PC."""
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument(
        "--client-dir",
        type=_path,
        metavar="DIR",
        help="keep the pairings and transfer state here (default: the user config and state "
        "dirs; env LANPAIR_CLIENT_DIR)",
    )
    mdns = argparse.ArgumentParser(add_help=False)
    mdns.add_argument(
        "--mdns",
        default=True,
        action=argparse.BooleanOptionalAction,
        help="look the PC up by mDNS when its stored address does not answer (default: on)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")
    moving = argparse.ArgumentParser(add_help=False, parents=[client, mdns, as_json])
    moving.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="give up on a file after S seconds without progress (default: 30)",
    )

    discover = commands.add_parser(
        "discover", parents=[client, as_json], help="list lanpair daemons on this network"
    )
    discover.add_argument(
        "--timeout",
        type=_seconds,
        default=0.3,  # daemons answer a browse within ~125 ms on a LAN
        metavar="S",
        help="how long to wait for mDNS answers (default: 0.3)",
    )
    discover.set_defaults(run=_client_command("discover"))

    pair = commands.add_parser(
        "pair",
        parents=[client],
        help="pair this machine with a PC",
        description="Pair with a PC: give the text of its pairing QR code "
        "(https://…/pair-confirm#t=…), or its name and the code `lanpair qr` shows.",
    )
    pair.add_argument("target", metavar="URL_OR_NAME", help="the QR code's text, or the PC's name")
    pair.add_argument("--code", help="the pairing code (with a name instead of a URL)")
    pair.add_argument(
        "--fingerprint", help="the PC's key fingerprint to pin (with a name; default: announced)"
    )
    pair.add_argument("--name", help="this device's name on the PC (default: the host name)")
    pair.set_defaults(run=_client_command("pair"))

    push = commands.add_parser(
        "push", parents=[moving], help="send files and folders to a paired PC"
    )
    push.add_argument("paths", nargs="+", metavar="PATH", help="files and folders to send")
    push.add_argument("--to", metavar="PC", help="which paired PC (name or id)")
    push.set_defaults(run=_client_command("push", "transfer_commands"))

    pull = commands.add_parser(
        "pull", parents=[moving], help="download a paired PC's gallery files into a folder"
    )
    pull.add_argument("dir", metavar="DIR", help="the folder to fill")
    pull.add_argument("--from", dest="from_", metavar="PC", help="which paired PC (name or id)")
    pull.set_defaults(run=_client_command("pull", "transfer_commands"))

    status = commands.add_parser(
        "status", parents=[client, mdns, as_json], help="show paired PCs and whether they answer"
    )
    status.set_defaults(run=_client_command("status"))


def _client_command(name: str, module: str = "client_commands") -> Command:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        import importlib

        command: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(f"lanpair.{module}"), name
        )
        return command(args)

    return run


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError("seconds must be above 0 and at most 86400")
    return value


def _path(text: str) -> Any:
    from pathlib import Path

    return Path(text).expanduser()


def _add_setting(parser: argparse.ArgumentParser, name: str) -> None:
    setting = next(s for s in SETTINGS if s.name == name)
    help_text = f"{setting.help} (default: {setting.shown_default()}; env {setting.env})"
    if setting.kind == "bool":
        parser.add_argument(
            setting.flag,
            dest=f"setting_{name}",
            default=argparse.SUPPRESS,
            action=argparse.BooleanOptionalAction,
            help=help_text,
        )
    else:
        parser.add_argument(
            setting.flag,
            dest=f"setting_{name}",
            default=argparse.SUPPRESS,
            metavar=setting.name.upper(),
            choices=setting.choices or None,
            help=help_text,
        )


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    prefix = "setting_"
    return {k[len(prefix) :]: v for k, v in vars(args).items() if k.startswith(prefix)}


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from lanpair import daemon
    from lanpair.logs import setup_logging

    setup_logging(settings.log_level)
    daemon.run(settings, on_ready=_print_ready)
    return EXIT_OK


def _print_ready(ready: Ready) -> None:
    print(f"lanpair: listening on {ready.listen_url}")
    print(f"  pair a phone: open {ready.pairing_urls[0]} on this PC")
    for url in ready.pairing_urls[1:]:
        print(f"                or {url}")
    if ready.fingerprint:
        print(f"  certificate fingerprint (SHA-256 of its public key): {ready.fingerprint}")
    else:
        print("  plain HTTP: traffic is not encrypted")
    print(f"  library: {ready.library}")
    print(f"  data: {ready.data_dir}", flush=True)


def _devices(args: argparse.Namespace, settings: Settings) -> int:
    from lanpair.clock import SystemClock, to_iso
    from lanpair.pairing import device_record

    devices = asyncio.run(_read_devices(settings))
    now = SystemClock().now()
    if args.json:
        records = {d.device_id: {**device_record(d, now), "synced_files": []} for d in devices}
        print(json.dumps(records, indent=2))
        return EXIT_OK
    if not devices:
        print("No paired devices. Run `lanpair qr` or open the pairing page to pair one.")
        return EXIT_OK
    rows = [("NAME", "ID", "STATUS", "PAIRED", "EXPIRES", "LAST SEEN")]
    rows += [
        (
            d.device_name,
            d.device_id,
            d.status_at(now).value,
            to_iso(d.confirmed_at) or "",
            to_iso(d.expires_at) or "",
            to_iso(d.last_seen) or "never",
        )
        for d in devices
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return EXIT_OK


async def _read_devices(settings: Settings) -> list[Device]:
    from lanpair.paths import Paths
    from lanpair.store import Store

    database = Paths(settings.data_dir).database
    if not await asyncio.to_thread(database.exists):
        return []
    async with Store(database) as store:
        return await store.pairings.devices()


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    from lanpair.client import owner_client
    from lanpair.pairing import DEVICE_ID_RE

    if not DEVICE_ID_RE.fullmatch(args.device_id):
        raise BadRequest(f"{args.device_id!r} is not a device id (dev_…); see `lanpair devices`.")
    try:
        client = owner_client(settings.data_dir)
    except DaemonNotRunning:
        device = asyncio.run(_revoke_offline(settings, args.device_id))
        print(f"Revoked {device.device_name} ({device.device_id}).")
        return EXIT_OK

    async def revoke() -> Any:
        async with client:
            return await client.call("POST", f"/api/pairing/revoke/{args.device_id}", {})

    result = asyncio.run(revoke())
    print(f"Revoked {result['device_id']}; its connections are closed.")
    return EXIT_OK


async def _revoke_offline(settings: Settings, device_id: str) -> Device:
    from lanpair.clock import SystemClock
    from lanpair.models import OWNER
    from lanpair.pairing import Pairing
    from lanpair.paths import Paths
    from lanpair.store import Store

    async with Store(Paths(settings.data_dir).database) as store:
        pairing = Pairing(
            store,
            SystemClock(),
            pending_ttl_s=settings.pending_ttl_s,
            pairing_ttl_s=settings.pairing_ttl_s,
        )
        return await pairing.revoke(device_id, OWNER, "cli")


def _qr(args: argparse.Namespace, settings: Settings) -> int:
    from lanpair import qr
    from lanpair.client import owner_client

    client = owner_client(settings.data_dir)

    async def generate() -> Any:
        async with client:
            return await client.call("POST", "/api/pairing/generate", {})

    pairing = asyncio.run(generate())
    print(qr.terminal(pairing["url"]))
    print("Scan this with the phone's camera, or open:")
    print(f"  {pairing['url']}")
    print(f"The code works once, until {pairing['expires_at']}.")
    print("On a computer on this network, either of:")
    print(f"  lanpair pair '{pairing['url']}'")
    # "--code=…": a code (or a fingerprint) may start with "-", which would read as a flag.
    by_name = f"  lanpair pair {shlex.quote(pairing['name'])} --code={pairing['pairing_token']}"
    if pairing.get("fingerprint"):
        by_name += f" --fingerprint={pairing['fingerprint']}"
    print(by_name)
    if pairing.get("fingerprint"):
        print(f"This PC's key fingerprint: {pairing['fingerprint']}")
    return EXIT_OK
