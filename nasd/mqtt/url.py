"""Broker URLs: ``mqtt://[user:pass@]host[:port]`` and ``mqtts://``, parsed once with clear errors.

One place turns a URL into a client's address, credentials and TLS settings, for the link and
the CLI's control client alike.

A password never has to appear on a command line (where ``ps`` shows it to every local user) or
in a config file: for a URL with a username and no password, :meth:`BrokerUrl.parse` reads it
from the file named by ``$NASD_BROKER_PASSWORD_FILE``, or else from ``broker-password`` in
``$CREDENTIALS_DIRECTORY`` (where systemd puts the file named by the unit's ``LoadCredential=``).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from nasd.errors import ConfigError

__all__ = ["CREDENTIAL_NAME", "PASSWORD_FILE_ENV", "BrokerUrl", "password_file"]

PASSWORD_FILE_ENV = "NASD_BROKER_PASSWORD_FILE"
"""Environment variable naming a file whose content is the broker password."""
CREDENTIAL_NAME = "broker-password"
"""The credential's name in ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=broker-password:...``)."""
MAX_PASSWORD_BYTES = 4096
"""A password file bigger than this is a mistake (a wrong path), not a password."""


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """``mqtt://[user:pass@]host[:port]`` or ``mqtts://`` (TLS, system CA store)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    # Kept out of repr(): a BrokerUrl in a log line or a traceback must not reveal it.
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, *, environ: Mapping[str, str] | None = None) -> BrokerUrl:
        """Parse a broker URL; a malformed one is a ConfigError saying what is wrong.

        A URL with a username but no password takes the password from a file (module
        docstring); ``environ`` (default: ``os.environ``) is where the file's name is looked up.
        A named file that is missing, unreadable or empty is a ConfigError naming it.
        """
        parts = urlsplit(url.strip())
        url = _redacted(url)  # for the error messages below
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ConfigError(
                f"broker URL {url!r}: scheme must be mqtt:// or mqtts:// "
                "(e.g. mqtt://127.0.0.1:1883)"
            )
        if not parts.hostname:
            raise ConfigError(f"broker URL {url!r}: no host")
        tls = parts.scheme in ("mqtts", "ssl")
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ConfigError(f"broker URL {url!r}: port must be a number 1-65535") from None
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if username is not None and password is None:
            source = password_file(os.environ if environ is None else environ)
            if source is not None:
                password = _read_password(source)
        return cls(host=parts.hostname, port=port, tls=tls, username=username, password=password)

    def client_options(self) -> dict[str, Any]:
        """aiomqtt.Client keyword arguments for this broker: address, credentials, TLS.

        ``mqtts://`` verifies the broker's certificate against the system CA store, which
        honours ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` (how a private CA is configured).
        """
        return {
            "hostname": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "tls_context": ssl.create_default_context() if self.tls else None,
        }

    def __str__(self) -> str:
        """The URL without the password (safe to log)."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def _redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``, for error messages."""
    scheme, separator, rest = url.strip().partition("://")
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    userinfo, at, address = rest[:end].rpartition("@")
    if not separator or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{address}{rest[end:]}"


def password_file(environ: Mapping[str, str]) -> Path | None:
    """The file holding the broker password, if the environment names one.

    ``$NASD_BROKER_PASSWORD_FILE`` first (set by hand or in an env file), then
    ``$CREDENTIALS_DIRECTORY/broker-password`` (set by systemd for ``LoadCredential=``).
    """
    explicit = environ.get(PASSWORD_FILE_ENV)
    if explicit:
        return Path(explicit)
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        return Path(credentials) / CREDENTIAL_NAME
    return None


def _read_password(path: Path) -> str:
    """The password in ``path``: its content without the line break at the end."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PASSWORD_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"broker password file {path}: cannot read it ({reason})") from None
    if len(data) > MAX_PASSWORD_BYTES:
        raise ConfigError(
            f"broker password file {path}: over {MAX_PASSWORD_BYTES} bytes, not a password"
        )
    try:
        password = data.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        raise ConfigError(f"broker password file {path}: not UTF-8 text") from None
    if not password:
        raise ConfigError(f"broker password file {path}: empty")
    return password
