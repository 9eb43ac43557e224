"""Broker URLs: ``mqtt://[user:pass@]host[:port]`` and ``mqtts://``, parsed once with clear errors.

One place turns a URL into a client's address, credentials and TLS settings, for the link and
the CLI's control client alike.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from nasd.errors import ConfigError

__all__ = ["BrokerUrl"]


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """``mqtt://[user:pass@]host[:port]`` or ``mqtts://`` (TLS, system CA store)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        """Parse a broker URL; a malformed one is a ConfigError saying what is wrong."""
        parts = urlsplit(url.strip())
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
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

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
