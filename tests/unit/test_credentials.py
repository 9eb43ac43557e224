"""``nasd agent-credentials``: accounts made with the real mosquitto_passwd, passwords kept secret.

A stored hash is checked against the password file it came with by recomputing it: Mosquitto's
``$7$`` format is PBKDF2-HMAC-SHA512 with the iteration count, salt and digest in the line.
(``tests/integration/test_acl.py`` logs in to a real broker with such an account.)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from nasd.cli import credentials
from nasd.errors import ConfigError
from nasd.mqtt import BrokerUrl

# mosquitto_passwd comes with Mosquitto, which the test suite requires (never skipped).


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nasd agent-credentials")
    credentials.add_arguments(parser)
    return parser.parse_args(list(argv))


def _hashes(password_file: Path) -> dict[str, str]:
    lines = password_file.read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line)


def _matches(stored: str, password: str) -> bool:
    _, kind, iterations, salt, digest = stored.split("$")
    assert kind == "7", stored
    computed = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations)
    )
    return base64.b64encode(computed).decode() == digest


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "nasd.passwd"
    path.write_text("")
    return path


def test_add_creates_the_account_and_a_private_password_file(
    tmp_path: Path, password_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parse(
        "add", "gpu-box-0", "--password-file", str(password_file), "--out", str(tmp_path),
        "--broker-host", "broker.lab.example",
    )  # fmt: skip
    with capture_logs() as logs:
        assert credentials.run(args) == 0
    secret_file = tmp_path / "gpu-box-0.password"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().removesuffix("\n")
    assert len(secret) >= 40
    assert _matches(_hashes(password_file)["gpu-box-0"], secret)
    printed = capsys.readouterr()
    assert secret not in printed.out + printed.err
    assert secret not in repr(logs)
    assert [entry["event"] for entry in logs] == ["credentials.added"]
    assert "nasd-agent --broker mqtts://gpu-box-0@broker.lab.example:8883 --name gpu-box-0" in (
        printed.out
    )
    assert "NASD_BROKER_PASSWORD_FILE=" in printed.out
    assert "systemctl reload mosquitto" in printed.out
    # What the agent will do with that file: the URL without a password gets it.
    broker = BrokerUrl.parse(
        "mqtts://gpu-box-0@broker.lab.example",
        environ={"NASD_BROKER_PASSWORD_FILE": str(secret_file)},
    )
    assert broker.password == secret


def test_each_agent_gets_its_own_password(tmp_path: Path, password_file: Path) -> None:
    first = credentials.add_agent("a1", password_file, tmp_path)
    second = credentials.add_agent("a2", password_file, tmp_path)
    assert first.read_text() != second.read_text()
    hashes = _hashes(password_file)
    assert sorted(hashes) == ["a1", "a2"]
    assert _matches(hashes["a1"], first.read_text().strip())
    assert not _matches(hashes["a2"], first.read_text().strip())


def test_existing_account_needs_replace(tmp_path: Path, password_file: Path) -> None:
    secret_file = credentials.add_agent("a1", password_file, tmp_path)
    old_secret, old_hashes = secret_file.read_text(), _hashes(password_file)
    with pytest.raises(ConfigError, match=r"already has an account 'a1'.*--replace"):
        credentials.add_agent("a1", password_file, tmp_path / "elsewhere")
    assert _hashes(password_file) == old_hashes
    credentials.add_agent("a1", password_file, tmp_path, replace=True)
    new_secret = secret_file.read_text()
    assert new_secret != old_secret
    assert _matches(_hashes(password_file)["a1"], new_secret.strip())


def test_an_existing_secret_file_is_never_overwritten_silently(
    tmp_path: Path, password_file: Path
) -> None:
    (tmp_path / "a1.password").write_text("someone else's\n")
    with pytest.raises(ConfigError, match="already exists"):
        credentials.add_agent("a1", password_file, tmp_path)
    assert (tmp_path / "a1.password").read_text() == "someone else's\n"
    assert _hashes(password_file) == {}


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("a/b", "agent name"),
        ("+", "agent name"),
        ("x" * 65, "agent name"),
        ("", "agent name"),
        ("nasd-daemon", "role account"),
        ("nasd-readonly", "role account"),
    ],
)
def test_bad_names_change_nothing(
    tmp_path: Path, password_file: Path, name: str, error: str
) -> None:
    with pytest.raises(ConfigError, match=error):
        credentials.add_agent(name, password_file, tmp_path)
    assert password_file.read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nasd.passwd"]


def test_missing_password_file_or_tool_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="does not exist: create it with `install"):
        credentials.add_agent("a1", tmp_path / "missing.passwd", tmp_path)
    assert not (tmp_path / "a1.password").exists()
    monkeypatch.setattr(credentials.shutil, "which", lambda _name: None)
    monkeypatch.setattr(credentials, "MOSQUITTO_PASSWD_FALLBACKS", ())
    with pytest.raises(ConfigError, match="mosquitto_passwd not found"):
        credentials.add_agent("a1", tmp_path / "missing.passwd", tmp_path)


def test_a_failing_tool_leaves_everything_as_it_was(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_secret = credentials.add_agent("a1", password_file, tmp_path).read_text()
    old_hashes = _hashes(password_file)
    # /bin/false in place of mosquitto_passwd: no account can be added or changed.
    monkeypatch.setattr(credentials, "_mosquitto_passwd", lambda: shutil.which("false"))
    with pytest.raises(ConfigError, match="exit status 1"):
        credentials.add_agent("a2", password_file, tmp_path)
    with pytest.raises(ConfigError, match="exit status 1"):
        credentials.add_agent("a1", password_file, tmp_path, replace=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a1.password", "nasd.passwd"]
    assert (tmp_path / "a1.password").read_text() == old_secret
    assert _hashes(password_file) == old_hashes


def test_remove(tmp_path: Path, password_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    credentials.add_agent("a1", password_file, tmp_path)
    credentials.add_agent("a2", password_file, tmp_path)
    assert credentials.run(_parse("remove", "a1", "--password-file", str(password_file))) == 0
    assert sorted(_hashes(password_file)) == ["a2"]
    assert "systemctl reload mosquitto" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="has no account 'a1'"):
        credentials.remove_agent("a1", password_file)
    with pytest.raises(ConfigError, match="role account"):
        credentials.remove_agent("nasd-daemon", password_file)


def test_parser_defaults() -> None:
    args = _parse("add", "a1")
    assert args.password_file == Path("/etc/mosquitto/nasd.passwd")
    assert args.out == Path()
    assert (args.broker_host, args.replace) == (None, False)
    with pytest.raises(SystemExit):
        _parse()
