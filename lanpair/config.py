"""Settings: one table drives CLI flags, LANPAIR_* variables, the TOML file, --help, README.

Precedence, lowest to highest: built-in defaults < config file < environment < command line.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from lanpair.errors import ConfigError

APP_NAME = "lanpair"
ENV_PREFIX = "LANPAIR_"
LOG_LEVELS = ("debug", "info", "warning", "error")
WATCH_MODES = ("auto", "events", "rescan")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_S = 10 * 365 * 86400
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its name everywhere, how to parse it, its default and its help."""

    name: str
    kind: str  # str | int | bool | duration | size | path | list | choice
    default: Any
    help: str
    default_help: str = ""
    choices: tuple[str, ...] = ()

    @property
    def attr(self) -> str:
        """Return the Settings attribute this fills (durations and sizes carry their unit)."""
        return self.name + {"duration": "_s", "size": "_bytes"}.get(self.kind, "")

    @property
    def flag(self) -> str:
        """Return the command-line flag."""
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """Return the environment variable."""
        return ENV_PREFIX + self.name.upper()

    def shown_default(self) -> str:
        """Return the default as a person should read it."""
        if self.default_help:
            return self.default_help
        if self.kind == "bool":
            return "on" if self.default else "off"
        return str(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "host",
        "list",
        (),
        "addresses to listen on, comma-separated (`::` alone takes IPv4 too)",
        "every IPv4 and IPv6 address",
    ),
    Setting("port", "int", 5000, "TCP port to listen on (0 picks a free one)"),
    Setting(
        "data_dir",
        "path",
        None,
        "where the database, certificates and uploads live",
        "the platform's user data dir (~/.local/share/lanpair)",
    ),
    Setting(
        "library", "path", None, "where uploaded photos and files are kept", "DATA_DIR/uploads"
    ),
    Setting(
        "reserve",
        "size",
        1 << 30,
        "free space to leave on the library's disk; uploads that would eat into it get 507",
        "1G",
    ),
    Setting(
        "max_upload", "size", 0, "largest file accepted in one upload (0: no limit)", "no limit"
    ),
    Setting("thumb_workers", "int", 2, "processes drawing thumbnails"),
    Setting(
        "watch",
        "choice",
        "auto",
        "how files put into the library by hand are noticed: file events, a rescan every "
        "30 s, or auto (events; rescans on network filesystems, where events never arrive)",
        choices=WATCH_MODES,
    ),
    Setting("tls", "bool", True, "serve HTTPS with a self-signed certificate (--no-tls: HTTP)"),
    Setting("mdns", "bool", True, "advertise the daemon on the LAN with mDNS (--no-mdns: off)"),
    Setting(
        "interface",
        "list",
        (),
        "network interfaces to advertise on with mDNS, comma-separated (e.g. wlan0)",
        "every interface but loopback",
    ),
    Setting("name", "str", None, "the PC's display name shown to phones", "the host name"),
    Setting("hostname", "str", None, "the .local name put in the QR code", "the system host name"),
    Setting(
        "advertise_ip",
        "str",
        "",
        "the IP address put in the QR code",
        "the address of the default route's interface",
    ),
    Setting(
        "owner_hosts",
        "list",
        (),
        "extra Host names under which this PC's own browser counts as the owner",
        "none",
    ),
    Setting("pending_ttl", "duration", 15 * 60, "how long a pairing QR code stays valid", "15m"),
    Setting("pairing_ttl", "duration", 30 * 86400, "how long a confirmed pairing lasts", "30d"),
    Setting("log_level", "choice", "info", "how much the daemon logs", choices=LOG_LEVELS),
)

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, resolved and validated."""

    host: tuple[str, ...]
    port: int
    data_dir: Path
    library: Path
    reserve_bytes: int
    max_upload_bytes: int
    thumb_workers: int
    watch: str
    tls: bool
    mdns: bool
    interface: tuple[str, ...]
    name: str
    hostname: str
    advertise_ip: str
    owner_hosts: tuple[str, ...]
    pending_ttl_s: float
    pairing_ttl_s: float
    log_level: str

    @property
    def local_name(self) -> str:
        """Return the mDNS name, ``<hostname>.local``."""
        return f"{self.hostname}.local"


def default_config_path() -> Path:
    """Return where the optional TOML config file is looked for."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def default_data_dir() -> Path:
    """Return the platform's data directory for lanpair."""
    return Path(platformdirs.user_data_dir(APP_NAME))


def system_hostname() -> str:
    """Return this machine's host name made into one DNS label."""
    return to_dns_label(socket.gethostname().split(".")[0]) or "lanpair"


def to_dns_label(text: str) -> str:
    """Lower-case ``text`` and replace what a DNS label may not hold with hyphens."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label[:63].rstrip("-")


def load(
    *,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> Settings:
    """Resolve every setting from defaults, the TOML file, the environment and the CLI."""
    environ = environ or {}
    values: dict[str, Any] = {}
    from_env = environ.get(ENV_PREFIX + "CONFIG", "").strip()
    explicit = config_path is not None or bool(from_env)
    path = config_path or (Path(from_env).expanduser() if from_env else default_config_path())
    for name, raw in _read_toml(path, required=explicit).items():
        values[name] = _parse(_setting(name, f"{path}"), raw, f"{name} in {path}")
    for setting in SETTINGS:
        if setting.env in environ:
            values[setting.name] = _parse(setting, environ[setting.env], setting.env)
    for name, raw in (cli or {}).items():
        setting = _setting(name, "the command line")
        values[name] = _parse(setting, raw, setting.flag)
    return _build(values)


def _setting(name: str, where: str) -> Setting:
    try:
        return SETTINGS_BY_NAME[name]
    except KeyError:
        raise ConfigError(f"Unknown setting {name!r} in {where}.") from None


def _read_toml(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"Config file {path} does not exist.") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc}") from None
    return {key.replace("-", "_"): value for key, value in data.items()}


_PARSERS: dict[str, Callable[[Setting, Any, str], Any]] = {}


def _parser(kind: str) -> Callable[[Callable[[Setting, Any, str], Any]], Callable[..., Any]]:
    def register(func: Callable[[Setting, Any, str], Any]) -> Callable[..., Any]:
        _PARSERS[kind] = func
        return func

    return register


def _parse(setting: Setting, raw: Any, where: str) -> Any:
    try:
        return _PARSERS[setting.kind](setting, raw, where)
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: {raw!r} is not a valid {setting.kind}.") from None


@_parser("str")
def _parse_str(setting: Setting, raw: Any, where: str) -> str:
    if not isinstance(raw, str):
        raise TypeError(raw)
    if setting.name == "advertise_ip" and raw.strip():
        _valid_address(raw.strip(), where)
    if setting.name == "hostname" and raw.strip():
        return _valid_hostname(raw.strip(), where)
    return raw.strip()


@_parser("int")
def _parse_int(setting: Setting, raw: Any, where: str) -> int:
    if isinstance(raw, bool | float):
        raise TypeError(raw)
    value = int(raw)
    if setting.name == "port" and not 0 <= value <= 65535:
        raise ConfigError(f"{where}: {value} is not a TCP port (0-65535).")
    return value


@_parser("bool")
def _parse_bool(setting: Setting, raw: Any, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)  # blank too: LANPAIR_TLS= must not turn TLS off without a word


@_parser("duration")
def _parse_duration(setting: Setting, raw: Any, where: str) -> float:
    if isinstance(raw, bool):
        raise TypeError(raw)
    if isinstance(raw, int | float):
        seconds = float(raw)
    else:
        match = _DURATION_RE.match(str(raw))
        if not match:
            raise ValueError(raw)
        seconds = float(match[1]) * _DURATION_UNITS[match[2]]
    if not 1 <= seconds <= MAX_DURATION_S:
        raise ConfigError(
            f"{where}: {raw!r} is not a duration between 1s and 10 years, like 15m or 30d."
        )
    return seconds


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.I)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@_parser("size")
def _parse_size(setting: Setting, raw: Any, where: str) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise TypeError(raw)
    if isinstance(raw, int | float):
        size = int(raw)
    else:
        match = _SIZE_RE.match(str(raw))
        if not match:
            raise ValueError(raw)
        size = int(float(match[1]) * _SIZE_UNITS[match[2].lower()])
    if not 0 <= size < 1 << 60:
        raise ConfigError(f"{where}: {raw!r} is not a size like 500M, 1G or 0.")
    return size


@_parser("path")
def _parse_path(setting: Setting, raw: Any, where: str) -> Path:
    if not isinstance(raw, str | Path) or not str(raw).strip():
        raise TypeError(raw)
    return Path(raw).expanduser()


@_parser("list")
def _parse_list(setting: Setting, raw: Any, where: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    values = tuple(str(item).strip() for item in items if str(item).strip())
    if setting.name == "host":
        for host in values:
            _valid_address(host, where)
    return values


@_parser("choice")
def _parse_choice(setting: Setting, raw: Any, where: str) -> str:
    text = str(raw).strip().lower()
    if text not in setting.choices:
        raise ConfigError(f"{where}: {raw!r} is not one of {', '.join(setting.choices)}.")
    return text


def _build(values: Mapping[str, Any]) -> Settings:
    resolved = {s.attr: values.get(s.name, s.default) for s in SETTINGS}
    resolved["data_dir"] = resolved["data_dir"] or default_data_dir()
    resolved["library"] = resolved["library"] or resolved["data_dir"] / "uploads"
    if resolved["thumb_workers"] < 1:
        raise ConfigError("thumb_workers: at least one process must draw thumbnails.")
    resolved["hostname"] = resolved["hostname"] or system_hostname()
    resolved["name"] = resolved["name"] or resolved["hostname"]
    return Settings(**resolved)


def _valid_hostname(raw: str, where: str) -> str:
    name = raw.lower().removesuffix(".local")
    if not _LABEL_RE.match(name):
        raise ConfigError(
            f"{where}: {raw!r} is not a valid host name (letters, digits and hyphens)."
        )
    return name


def _valid_address(text: str, where: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not an IP address.") from None


def settings_markdown() -> str:
    """Return the settings as the Markdown table the README carries."""
    rows = ["| flag | environment | default | what it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        flag = f"`--{'[no-]' if s.kind == 'bool' else ''}{s.name.replace('_', '-')}`"
        rows.append(f"| {flag} | `{s.env}` | {s.shown_default()} | {s.help} |")
    return "\n".join(rows)
