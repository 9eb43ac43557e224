"""``nasd agent-credentials``: give an agent its own Mosquitto account, or take it away.

Run on the broker host, by whoever may edit Mosquitto's password file (usually root)::

    nasd agent-credentials add gpu-box-0 --broker-host broker.lab.example
    nasd agent-credentials remove gpu-box-0

An agent's username is its agent id, so the ACL file (``systemd/mosquitto-nasd.acl``) can limit
it to ``nasd/v1/agents/<its id>/...``. ``add`` generates a strong random password, stores its
hash with Mosquitto's own ``mosquitto_passwd`` (the password goes to that tool's standard input,
never onto a command line that ``ps`` would show), and writes the password to a 0600 file to be
copied to the agent's machine, where ``nasd-agent`` reads it through
``$NASD_BROKER_PASSWORD_FILE`` or systemd's ``LoadCredential=`` (:mod:`nasd.mqtt.url`). The
password itself is never printed or logged.

User mistakes (a bad name, a missing tool or file) raise :class:`ConfigError`: one line, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

import structlog

from nasd.errors import ConfigError, NasdError

__all__ = [
    "DEFAULT_PASSWORD_FILE",
    "ROLE_USERS",
    "add_agent",
    "add_arguments",
    "remove_agent",
    "run",
]

log = structlog.get_logger("nasd.cli.credentials")

DEFAULT_PASSWORD_FILE = Path("/etc/mosquitto/nasd.passwd")
"""Where ``systemd/mosquitto-nasd.conf`` points Mosquitto's ``password_file``."""
ROLE_USERS = frozenset({"nasd-daemon", "nasd-admin", "nasd-readonly"})
"""The ACL file's non-agent accounts: never created, replaced or removed as an agent."""
TLS_PORT = 8883
"""The drop-in's TLS listener: where agents on other machines connect."""
PASSWORD_BYTES = 32
"""Random bytes per password (256 bits; 43 URL-safe characters)."""
MOSQUITTO_PASSWD_FALLBACKS = ("/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd")
TOOL_TIMEOUT_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``add`` and ``remove`` actions and their options, on ``parser``."""
    actions = parser.add_subparsers(dest="credentials_action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add", help="create an agent's broker account and a password file for its machine"
    )
    add.add_argument("name", help="the agent's id: its broker username and nasd-agent --name")
    _add_password_file(add)
    add.add_argument(
        "--out",
        type=Path,
        default=Path(),
        help="directory for NAME.password, mode 0600 (default: the current directory)",
    )
    add.add_argument(
        "--broker-host",
        default=None,
        help="the broker's name as agents reach it, as in its TLS certificate (default: this "
        "host's fully qualified name)",
    )
    add.add_argument(
        "--replace",
        action="store_true",
        help="give an existing account a new password (the old one stops working on reload)",
    )
    remove = actions.add_parser("remove", help="delete an agent's broker account")
    remove.add_argument("name", help="the agent's id")
    _add_password_file(remove)


def _add_password_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-file",
        type=Path,
        default=DEFAULT_PASSWORD_FILE,
        help=f"Mosquitto's password_file (default: {DEFAULT_PASSWORD_FILE})",
    )


def run(args: argparse.Namespace) -> int:
    """Carry out ``args.credentials_action``; 0 on success, ConfigError for a user mistake."""
    if args.credentials_action == "add":
        secret_path = add_agent(args.name, args.password_file, args.out, replace=args.replace)
        host = args.broker_host or socket.getfqdn()
        print(_add_instructions(args.name, args.password_file, secret_path, host))
        return 0
    if args.credentials_action == "remove":
        remove_agent(args.name, args.password_file)
        print(
            f"Removed broker account {args.name!r} from {args.password_file}.\n"
            "Apply it now (Mosquitto re-reads its password file on reload):\n"
            "  systemctl reload mosquitto\n"
            f"and delete the agent's password file on its machine."
        )
        return 0
    raise ConfigError(f"unknown action {args.credentials_action!r}: use add or remove")


def add_agent(name: str, password_file: Path, out_dir: Path, *, replace: bool = False) -> Path:
    """Create agent ``name``'s account in ``password_file``; returns the file with its password.

    The password goes to ``out_dir/NAME.password`` (mode 0600; an existing file is replaced
    only with ``replace``). It is written to a temporary file first and renamed into place only
    once the account is stored, so a failure leaves the password file and the old secret as
    they were.
    """
    _check_agent_name(name)
    tool = _mosquitto_passwd()
    existing = _users(password_file)
    if name in existing and not replace:
        raise ConfigError(
            f"{password_file} already has an account {name!r}: pass --replace for a new "
            "password, or pick another name"
        )
    if not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: not a directory")
    secret_path = out_dir / f"{name}.password"
    if secret_path.exists() and not replace:
        raise ConfigError(
            f"{secret_path} already exists: move it away, or pass --replace for a new password"
        )
    secret = secrets.token_urlsafe(PASSWORD_BYTES)
    pending = out_dir / f".{name}.password.new"
    _write_secret(pending, secret)
    try:
        # Asked twice, as at a terminal; on stdin, so that no process list ever shows it.
        _call(tool, [str(password_file), name], stdin=f"{secret}\n{secret}\n")
        pending.replace(secret_path)
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    log.info(
        "credentials.added",
        agent=name,
        password_file=str(password_file),
        secret_file=str(secret_path),
        replaced=name in existing,
    )
    return secret_path


def remove_agent(name: str, password_file: Path) -> None:
    """Delete agent ``name``'s account from ``password_file`` (ConfigError if it has none)."""
    _check_agent_name(name)
    tool = _mosquitto_passwd()
    if name not in _users(password_file):
        raise ConfigError(f"{password_file} has no account {name!r}")
    _call(tool, ["-D", str(password_file), name])
    log.info("credentials.removed", agent=name, password_file=str(password_file))


# -- helpers ------------------------------------------------------------------------------------


def _check_agent_name(name: str) -> None:
    from nasd.core.wire import check_agent_id

    try:
        check_agent_id(name)
    except NasdError as exc:
        raise ConfigError(f"agent name: {exc}") from None
    if name in ROLE_USERS:
        raise ConfigError(
            f"{name!r} is a role account of the ACL file ({', '.join(sorted(ROLE_USERS))}), "
            "not an agent: manage it with mosquitto_passwd"
        )


def _mosquitto_passwd() -> str:
    found = shutil.which("mosquitto_passwd")
    if found:
        return found
    for candidate in MOSQUITTO_PASSWD_FALLBACKS:
        if os.access(candidate, os.X_OK):
            return candidate
    raise ConfigError(
        "mosquitto_passwd not found: run this on the broker host, where it comes with "
        "Mosquitto (apt-get install mosquitto)"
    )


def _users(password_file: Path) -> set[str]:
    """The usernames in a Mosquitto password file (``user:hash`` lines)."""
    try:
        text = password_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"password file {password_file} does not exist: create it with "
            f"`install -m 0640 -o root -g mosquitto /dev/null {password_file}` (see "
            "systemd/README.md), or pass --password-file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"password file {password_file}: cannot read it ({exc})") from None
    return {line.split(":", 1)[0] for line in text.splitlines() if ":" in line}


def _write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to a new file only its owner can read (a stale one is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by an interrupted run; O_EXCL below refuses to follow any link
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)  # whatever the umask
        handle.write(secret + "\n")


def _call(tool: str, argv: list[str], *, stdin: str | None = None) -> None:
    """Run mosquitto_passwd; its complaint (never the password) becomes a ConfigError."""
    try:
        done = subprocess.run(
            [tool, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{tool} failed: {exc}") from None
    if done.returncode != 0:
        # Its output is prompts and error lines; the password only ever went to its stdin.
        lines = [
            line.strip()
            for line in (done.stderr + done.stdout).splitlines()
            if line.strip() and "password:" not in line.lower()
        ]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise ConfigError(f"{Path(tool).name} {' '.join(argv)}: {reason}")


def _add_instructions(name: str, password_file: Path, secret_path: Path, host: str) -> str:
    """What to do next, on the broker host and on the agent's machine (never the password)."""
    return "\n".join(
        [
            f"Added broker account {name!r} to {password_file}.",
            "",
            "1. Make Mosquitto read it (on this host):",
            "     systemctl reload mosquitto",
            f"2. Copy {secret_path} (it holds the password; mode 0600) to the agent's machine,",
            f"   e.g. as /etc/nasd/{name}.password, readable only by the user running the agent.",
            "3. Start the agent there:",
            f"     NASD_BROKER_PASSWORD_FILE=/etc/nasd/{name}.password \\",
            f"       nasd-agent --broker mqtts://{name}@{host}:{TLS_PORT} --name {name}",
            "   Under systemd (nasd-agent@.service) the unit loads the file with",
            "   LoadCredential= instead: see systemd/README.md.",
        ]
    )
