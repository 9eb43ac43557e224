"""The exceptions nasd raises on purpose.

::

    NasdError                  base of everything below
    ├── ConfigError            a user's config, CLI argument or experiment file is wrong
    ├── InvalidGenotype        a genotype does not belong to its search space
    ├── WireError              bytes or a topic from the network were refused (logged and dropped)
    ├── StoreError             the database is not in the state nasd needs (wrong pragmas, schema)
    ├── CommandError           a control request (submit, pause, ...) cannot be carried out
    └── BrokerUnavailable      the MQTT broker could not be reached

Anything else that escapes is a bug: it takes the daemon down so that systemd restarts it.
"""

from __future__ import annotations


class NasdError(Exception):
    """Base class of all errors nasd raises deliberately."""


class ConfigError(NasdError):
    """A configuration value, CLI argument or experiment file is invalid (a user mistake)."""


class InvalidGenotype(NasdError):
    """A genotype is not a member of the search space it is checked against."""


class WireError(NasdError):
    """A message or topic received from the network was malformed, oversized or hostile."""


class StoreError(NasdError):
    """The SQLite store is not in the state nasd requires."""


class CommandError(NasdError):
    """A control request cannot be carried out; its message goes back to the client."""


class BrokerUnavailable(NasdError):
    """The MQTT broker could not be reached."""
