"""Settings: precedence, parsing, validation, and the README/--help that the table drives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lanpair import cli, config
from lanpair.errors import ConfigError

README = Path(__file__).parents[1] / "README.md"


@pytest.fixture
def no_file(tmp_path: Path) -> Path:
    """Return an empty config file, so no test reads the user's real one."""
    path = tmp_path / "empty.toml"
    path.write_text("")
    return path


def write_toml(tmp_path: Path, text: str) -> Path:
    """Write ``text`` as a TOML config file under ``tmp_path`` and return its path."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_apply_when_nothing_is_given(no_file: Path) -> None:
    """With an empty file, no environment and no flags, every built-in default is used."""
    settings = config.load(cli={}, environ={}, config_path=no_file)
    assert settings.port == 5000
    assert settings.host == ()
    assert settings.tls is True
    assert settings.mdns is True
    assert settings.advertise_ip == ""
    assert settings.owner_hosts == ()
    assert settings.pending_ttl_s == 15 * 60
    assert settings.pairing_ttl_s == 30 * 86400
    assert settings.log_level == "info"
    assert settings.data_dir == config.default_data_dir()
    assert settings.hostname == config.system_hostname()
    assert settings.name == settings.hostname


def test_toml_file_overrides_defaults(tmp_path: Path) -> None:
    """A value in the TOML file beats the built-in default."""
    path = write_toml(tmp_path, 'port = 6001\npending_ttl = "10m"\nlog_level = "debug"\n')
    settings = config.load(environ={}, config_path=path)
    assert settings.port == 6001
    assert settings.pending_ttl_s == 600
    assert settings.log_level == "debug"


def test_environment_overrides_toml_file(tmp_path: Path) -> None:
    """A LANPAIR_* variable beats the same setting in the TOML file."""
    path = write_toml(tmp_path, "port = 6001\n")
    settings = config.load(environ={"LANPAIR_PORT": "6002"}, config_path=path)
    assert settings.port == 6002


def test_command_line_overrides_environment_and_file(tmp_path: Path) -> None:
    """A flag beats both the environment and the file; untouched layers still apply."""
    path = write_toml(tmp_path, 'port = 6001\nname = "From file"\nlog_level = "error"\n')
    settings = config.load(
        cli={"port": "6003"},
        environ={"LANPAIR_PORT": "6002", "LANPAIR_NAME": "From env"},
        config_path=path,
    )
    assert settings.port == 6003
    assert settings.name == "From env"
    assert settings.log_level == "error"


def test_toml_keys_may_use_hyphens(tmp_path: Path) -> None:
    """A TOML key written with hyphens (``data-dir``) fills the underscored setting."""
    path = write_toml(tmp_path, f'data-dir = "{tmp_path / "data"}"\n')
    assert config.load(environ={}, config_path=path).data_dir == tmp_path / "data"


def test_lanpair_config_variable_names_the_file(tmp_path: Path) -> None:
    """LANPAIR_CONFIG points load() at a config file when no path is passed."""
    path = write_toml(tmp_path, "port = 6004\n")
    settings = config.load(environ={"LANPAIR_CONFIG": str(path)})
    assert settings.port == 6004


def test_missing_lanpair_config_file_is_an_error(tmp_path: Path) -> None:
    """A config file named by LANPAIR_CONFIG that does not exist is a ConfigError."""
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        config.load(environ={"LANPAIR_CONFIG": str(missing)})


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    """A config_path that does not exist is a ConfigError naming the file."""
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        config.load(environ={}, config_path=missing)


def test_unparsable_toml_is_an_error(tmp_path: Path) -> None:
    """A config file that is not TOML is a ConfigError naming the file."""
    path = write_toml(tmp_path, "port = = 5\n")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        config.load(environ={}, config_path=path)


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    """An unknown key in the TOML file is a ConfigError naming the key."""
    path = write_toml(tmp_path, "colour = 'blue'\n")
    with pytest.raises(ConfigError, match="colour"):
        config.load(environ={}, config_path=path)


def test_unknown_cli_setting_is_an_error(no_file: Path) -> None:
    """An unknown setting passed as a flag is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="colour"):
        config.load(cli={"colour": "blue"}, environ={}, config_path=no_file)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("90s", 90),
        ("15m", 15 * 60),
        ("12h", 12 * 3600),
        ("30d", 30 * 86400),
        ("45", 45),
        (" 2 h ", 7200),
        ("1.5m", 90),
    ],
)
def test_durations_take_units(no_file: Path, raw: str, seconds: float) -> None:
    """Durations accept s, m, h, d and plain seconds."""
    settings = config.load(environ={"LANPAIR_PENDING_TTL": raw}, config_path=no_file)
    assert settings.pending_ttl_s == seconds


def test_toml_duration_may_be_a_number(tmp_path: Path) -> None:
    """A TOML duration given as a bare number is seconds."""
    path = write_toml(tmp_path, "pairing_ttl = 3600\n")
    assert config.load(environ={}, config_path=path).pairing_ttl_s == 3600


@pytest.mark.parametrize("raw", ["-1", "soon", "0", "0s", "15 minutes", "", "5w", "0.0001s"])
def test_bad_duration_names_the_variable(no_file: Path, raw: str) -> None:
    """A duration that is not positive or not understood is a ConfigError naming the key."""
    with pytest.raises(ConfigError, match="LANPAIR_PENDING_TTL"):
        config.load(environ={"LANPAIR_PENDING_TTL": raw}, config_path=no_file)


def test_bad_duration_on_command_line_names_the_flag(no_file: Path) -> None:
    """A bad duration flag is a ConfigError naming the flag."""
    with pytest.raises(ConfigError, match="--pairing-ttl"):
        config.load(cli={"pairing_ttl": "soon"}, environ={}, config_path=no_file)


@pytest.mark.parametrize("raw", ["inf", "nan", "1e400", "99999999999d"])
def test_unbounded_durations_are_refused(tmp_path: Path, raw: str) -> None:
    """Infinite, NaN or absurdly long durations are refused up front, not when pairing."""
    path = write_toml(tmp_path, f"pairing_ttl = {raw if raw != '99999999999d' else repr(raw)}\n")
    with pytest.raises(ConfigError, match="pairing_ttl"):
        config.load(environ={}, config_path=path)


def test_fractional_port_is_refused(tmp_path: Path) -> None:
    """A port of 5000.9 in the file is an error, not silently 5000."""
    with pytest.raises(ConfigError, match="port"):
        config.load(environ={}, config_path=write_toml(tmp_path, "port = 5000.9\n"))


def test_bad_port_from_the_environment_names_the_variable(no_file: Path) -> None:
    """An out-of-range port from LANPAIR_PORT is reported as LANPAIR_PORT, not --port."""
    with pytest.raises(ConfigError, match="LANPAIR_PORT"):
        config.load(environ={"LANPAIR_PORT": "70000"}, config_path=no_file)


def test_empty_lanpair_config_is_ignored(tmp_path: Path) -> None:
    """LANPAIR_CONFIG set to nothing means the default file, which may be missing."""
    settings = config.load(environ={"LANPAIR_CONFIG": "", "LANPAIR_PORT": "6000"})
    assert settings.port == 6000


def test_negative_duration_in_toml_names_the_key(tmp_path: Path) -> None:
    """A negative duration in the file is a ConfigError naming the key."""
    path = write_toml(tmp_path, "pending_ttl = -1\n")
    with pytest.raises(ConfigError, match="pending_ttl"):
        config.load(environ={}, config_path=path)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_bool_environment_values(no_file: Path, raw: str, expected: bool) -> None:
    """Boolean variables take 1/true/yes/on and 0/false/no/off, any case."""
    settings = config.load(environ={"LANPAIR_TLS": raw}, config_path=no_file)
    assert settings.tls is expected


@pytest.mark.parametrize("raw", ["maybe", "", "  "])
def test_bad_bool_environment_value_names_the_variable(no_file: Path, raw: str) -> None:
    """A boolean variable that is neither on nor off is a ConfigError naming it; a blank one
    too (LANPAIR_TLS= once turned TLS off without a word)."""
    with pytest.raises(ConfigError, match="LANPAIR_MDNS"):
        config.load(environ={"LANPAIR_MDNS": raw}, config_path=no_file)


def test_bool_flag_from_command_line(no_file: Path) -> None:
    """A --no-tls flag (False from argparse) turns TLS off over an environment that turns it on."""
    settings = config.load(cli={"tls": False}, environ={"LANPAIR_TLS": "on"}, config_path=no_file)
    assert settings.tls is False


def test_list_values_split_on_commas(no_file: Path) -> None:
    """A list setting splits 'a, b' into trimmed items and drops empty ones."""
    settings = config.load(environ={"LANPAIR_OWNER_HOSTS": "a, b,,  c "}, config_path=no_file)
    assert settings.owner_hosts == ("a", "b", "c")


def test_list_values_from_toml_array(tmp_path: Path) -> None:
    """A TOML array fills a list setting."""
    path = write_toml(tmp_path, 'host = ["127.0.0.1", "::1"]\n')
    assert config.load(environ={}, config_path=path).host == ("127.0.0.1", "::1")


def test_valid_hosts_are_accepted(no_file: Path) -> None:
    """--host takes IPv4 and IPv6 addresses, comma-separated."""
    settings = config.load(cli={"host": "127.0.0.1, ::1"}, environ={}, config_path=no_file)
    assert settings.host == ("127.0.0.1", "::1")


def test_invalid_host_names_the_flag_and_value(no_file: Path) -> None:
    """A --host that is not an IP address is a ConfigError naming --host and the value."""
    with pytest.raises(ConfigError, match=r"--host.*not-an-ip"):
        config.load(cli={"host": "127.0.0.1,not-an-ip"}, environ={}, config_path=no_file)


def test_invalid_advertise_ip_names_the_flag(no_file: Path) -> None:
    """An --advertise-ip that is not an IP address is a ConfigError naming the flag."""
    with pytest.raises(ConfigError, match=r"--advertise-ip.*999\.1\.1\.1"):
        config.load(cli={"advertise_ip": "999.1.1.1"}, environ={}, config_path=no_file)


def test_valid_advertise_ip_is_kept(no_file: Path) -> None:
    """A valid --advertise-ip is kept as given."""
    settings = config.load(cli={"advertise_ip": "192.168.1.20"}, environ={}, config_path=no_file)
    assert settings.advertise_ip == "192.168.1.20"


@pytest.mark.parametrize("port", ["70000", "-1", "65536"])
def test_port_out_of_range_names_the_flag(no_file: Path, port: str) -> None:
    """A --port outside 0-65535 is a ConfigError naming --port."""
    with pytest.raises(ConfigError, match=r"--port"):
        config.load(cli={"port": port}, environ={}, config_path=no_file)


@pytest.mark.parametrize("port", ["0", "65535"])
def test_port_bounds_are_accepted(no_file: Path, port: str) -> None:
    """Ports 0 (pick a free one) and 65535 are valid."""
    assert config.load(cli={"port": port}, environ={}, config_path=no_file).port == int(port)


def test_non_numeric_port_names_the_flag(no_file: Path) -> None:
    """A --port that is not a number is a ConfigError naming --port."""
    with pytest.raises(ConfigError, match=r"--port.*'http'"):
        config.load(cli={"port": "http"}, environ={}, config_path=no_file)


def test_bool_in_toml_is_not_a_port(tmp_path: Path) -> None:
    """``port = true`` in the file is refused rather than read as port 1."""
    path = write_toml(tmp_path, "port = true\n")
    with pytest.raises(ConfigError, match="port"):
        config.load(environ={}, config_path=path)


def test_log_level_choice_is_case_insensitive_and_checked(no_file: Path) -> None:
    """log_level takes a known level in any case and names the variable for an unknown one."""
    assert config.load(environ={"LANPAIR_LOG_LEVEL": "WARNING"}, config_path=no_file).log_level == (
        "warning"
    )
    with pytest.raises(ConfigError, match="LANPAIR_LOG_LEVEL"):
        config.load(environ={"LANPAIR_LOG_LEVEL": "loud"}, config_path=no_file)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("mypc", "mypc"), ("MyPC", "mypc"), ("mypc.local", "mypc"), ("My-PC-2.LOCAL", "my-pc-2")],
)
def test_hostname_is_lowercased_and_loses_local_suffix(
    no_file: Path, raw: str, expected: str
) -> None:
    """--hostname is lower-cased and a trailing .local is stripped."""
    settings = config.load(cli={"hostname": raw}, environ={}, config_path=no_file)
    assert settings.hostname == expected
    assert settings.local_name == f"{expected}.local"


@pytest.mark.parametrize("raw", ["my_pc", "-mypc", "mypc-", "my pc", "a.b", "x" * 64, "pc.local.x"])
def test_invalid_hostname_names_the_flag(no_file: Path, raw: str) -> None:
    """A --hostname that is not one DNS label is a ConfigError naming --hostname."""
    with pytest.raises(ConfigError, match="--hostname"):
        config.load(cli={"hostname": raw}, environ={}, config_path=no_file)


def test_name_defaults_to_hostname(no_file: Path) -> None:
    """Without --name, the display name is the host name."""
    settings = config.load(cli={"hostname": "studio"}, environ={}, config_path=no_file)
    assert settings.name == "studio"


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("My PC!", "my-pc"),
        ("Anna's MacBook Pro", "anna-s-macbook-pro"),
        ("--edge--", "edge"),
        ("under_score", "under-score"),
        ("---", ""),
        ("a" * 70, "a" * 63),
        ("a" * 62 + "-b", "a" * 62),
    ],
)
def test_to_dns_label(text: str, label: str) -> None:
    """to_dns_label lower-cases, hyphenates, trims hyphens and caps the label at 63 chars."""
    assert config.to_dns_label(text) == label


def test_system_hostname_is_a_valid_label() -> None:
    """The system host name fallback is always one valid DNS label."""
    assert re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", config.system_hostname())


def test_settings_markdown_has_one_row_per_setting() -> None:
    """settings_markdown() is a header, a rule and one row per SETTINGS entry."""
    lines = config.settings_markdown().splitlines()
    assert lines[0].startswith("| flag |")
    assert lines[1] == "|---|---|---|---|"
    rows = lines[2:]
    assert len(rows) == len(config.SETTINGS)
    for row, setting in zip(rows, config.SETTINGS, strict=True):
        assert f"`{setting.env}`" in row
        assert setting.name.replace("_", "-") in row


def test_readme_settings_table_is_generated() -> None:
    """README.md holds exactly settings_markdown() between its settings markers."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- settings -->\n(.*?)\n<!-- /settings -->", text, re.DOTALL)
    assert match, "README.md lacks the <!-- settings --> ... <!-- /settings --> markers"
    assert match[1] == config.settings_markdown()


def test_serve_help_lists_every_setting_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """`lanpair serve --help` shows every setting's flag (and --no-X for booleans)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for setting in config.SETTINGS:
        assert setting.flag in out
        assert setting.env in out
        if setting.kind == "bool":
            assert "--no-" + setting.flag.removeprefix("--") in out
