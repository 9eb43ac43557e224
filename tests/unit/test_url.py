"""Broker URLs: parsing, and the password that never has to be on a command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nasd.errors import ConfigError
from nasd.mqtt import BrokerUrl


def test_plain_and_tls_defaults() -> None:
    assert BrokerUrl.parse("mqtt://broker") == BrokerUrl("broker", 1883)
    assert BrokerUrl.parse("mqtts://broker") == BrokerUrl("broker", 8883, tls=True)
    assert BrokerUrl.parse(" mqtt://u:p%40ss@h:1884 ", environ={}) == BrokerUrl(
        "h", 1884, username="u", password="p@ss"
    )


@pytest.mark.parametrize(
    ("url", "error"),
    [("http://h", "scheme"), ("mqtt://", "no host"), ("mqtt://h:99999", "port")],
)
def test_malformed_urls_are_config_errors(url: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        BrokerUrl.parse(url, environ={})


def test_errors_and_repr_never_show_the_password() -> None:
    with pytest.raises(ConfigError) as bad_port:
        BrokerUrl.parse("mqtt://agent:hunter2@h:99999/x@y", environ={})
    assert "hunter2" not in str(bad_port.value)
    assert "agent:***@h:99999" in str(bad_port.value)
    broker = BrokerUrl.parse("mqtts://agent:hunter2@h", environ={})
    assert broker.password == "hunter2"
    assert "hunter2" not in repr(broker)
    assert "hunter2" not in str(broker)


def test_password_from_nasd_broker_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "a1.password"
    secret.write_text("s3cret-from-file\n")
    environ = {"NASD_BROKER_PASSWORD_FILE": str(secret), "CREDENTIALS_DIRECTORY": "/nonexistent"}
    broker = BrokerUrl.parse("mqtts://a1@broker:8883", environ=environ)
    assert (broker.username, broker.password) == ("a1", "s3cret-from-file")
    assert broker.client_options()["password"] == "s3cret-from-file"


def test_password_from_systemd_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "broker-password").write_text("from-systemd\r\n")
    broker = BrokerUrl.parse(
        "mqtt://nasd-daemon@127.0.0.1", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}
    )
    assert broker.password == "from-systemd"


def test_password_in_the_url_wins_and_no_username_reads_nothing(tmp_path: Path) -> None:
    environ = {"NASD_BROKER_PASSWORD_FILE": str(tmp_path / "missing")}
    assert BrokerUrl.parse("mqtt://u:inline@h", environ=environ).password == "inline"
    assert BrokerUrl.parse("mqtt://h", environ=environ).password is None
    # A username alone with no file named: no password (a broker may not ask for one).
    assert BrokerUrl.parse("mqtt://u@h", environ={}).password is None


def test_the_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-env")
    monkeypatch.setenv("NASD_BROKER_PASSWORD_FILE", str(secret))
    assert BrokerUrl.parse("mqtt://u@h").password == "from-env"


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"{missing}.*cannot read"):
        BrokerUrl.parse("mqtt://u@h", environ={"NASD_BROKER_PASSWORD_FILE": str(missing)})
    with pytest.raises(ConfigError, match=f"{tmp_path / 'broker-password'}"):
        BrokerUrl.parse("mqtt://u@h", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x")
    secret.chmod(0)
    with pytest.raises(ConfigError, match="cannot read"):
        BrokerUrl.parse("mqtt://u@h", environ={"NASD_BROKER_PASSWORD_FILE": str(secret)})


@pytest.mark.parametrize(
    ("content", "error"),
    [(b"", "empty"), (b"\n", "empty"), (b"\xff\xfe", "UTF-8"), (b"x" * 5000, "not a password")],
)
def test_bad_password_files_are_config_errors(tmp_path: Path, content: bytes, error: str) -> None:
    secret = tmp_path / "pw"
    secret.write_bytes(content)
    with pytest.raises(ConfigError, match=error):
        BrokerUrl.parse("mqtt://u@h", environ={"NASD_BROKER_PASSWORD_FILE": str(secret)})


def test_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        BrokerUrl.parse("mqtt://u@h", environ={"NASD_BROKER_PASSWORD_FILE": str(tmp_path)})
