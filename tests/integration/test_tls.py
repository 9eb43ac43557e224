"""``mqtts://``: the daemon, an agent and the CLI talk to Mosquitto over TLS.

The certificates are made here with the ``openssl`` command: a private CA and a server
certificate for 127.0.0.1. nasd verifies the broker against the system's CA store, which honours
``SSL_CERT_FILE``; that is how a deployment with a private CA points nasd at it (README). Without
it the connection must be refused with a clear error, not a traceback.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nasd.mqtt.broker import free_port
from tests.brokers import MosquittoProcess, wait_port
from tests.integration import procs

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class TlsBroker:
    url: str
    ca_file: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server key and certificate for IP 127.0.0.1 signed by it."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=nasd test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=directory,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=directory,
    )
    (directory / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
             cwd=directory)  # fmt: skip
    for path in directory.iterdir():
        path.chmod(0o644)  # Mosquitto may read them after dropping root
    directory.chmod(0o755)
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    # Not under tmp_path: its parents are private, and Mosquitto started as root reads the files
    # only after switching to its own user.
    certs = Path(tempfile.mkdtemp(prefix="nasd-tls-"))
    ca, cert, key = make_certificates(certs)
    tls_port = free_port()
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    mosquitto = MosquittoProcess(
        workdir,
        extra_config=(
            f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        ),
    )
    try:
        mosquitto.start()
        wait_port("127.0.0.1", tls_port)
        yield TlsBroker(f"mqtts://127.0.0.1:{tls_port}", ca)
    finally:
        mosquitto.stop()
        shutil.rmtree(certs, ignore_errors=True)


def test_search_runs_over_tls(
    tls_broker: TlsBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_broker.ca_file))  # inherited by the processes
    experiment = procs.write_experiment(tmp_path / "exp.toml", "tls", 8, trainer="zero")
    settings = procs.write_settings(tmp_path, tls_broker.url, experiment)
    db = tmp_path / "nasd.db"
    logs = [tmp_path / "daemon.log", tmp_path / "agent-0.log"]
    daemon = procs.start_daemon(settings, logs[0])
    agent = procs.start_agent(tls_broker.url, "agent-0", tmp_path)
    try:
        procs.wait_until(
            lambda: procs.query(db, "SELECT status FROM experiments") == [("done",)],
            90,
            "the search over TLS to finish",
            [daemon, agent],
            logs,
        )
        status = procs.cli("status", "--broker", tls_broker.url, "--json")
        assert status.returncode == 0, status.stderr
        assert '"name": "tls"' in status.stdout
    finally:
        assert procs.stop(agent) == 0
        assert procs.stop(daemon) == 0
    assert procs.query(db, "SELECT COUNT(DISTINCT trial_id) FROM results") == [(8,)]


def test_untrusted_broker_certificate_is_a_clear_error(
    tls_broker: TlsBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    result = procs.cli("status", "--broker", tls_broker.url)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "certificate" in result.stderr.lower(), result.stderr
