"""What `nasd` registers for the operator: backup, restore, doctor, agent-credentials."""

from __future__ import annotations

import pytest

from nasd.cli import build_parser, commands, main


def test_every_operator_command_is_registered() -> None:
    parser = build_parser()
    args = parser.parse_args(["backup", "--db", "a.db", "--out", "b.db"])
    assert (args.command, str(args.out), args.force) == ("backup", "b.db", False)
    args = parser.parse_args(["restore", "b.db", "--db", "a.db", "--force"])
    assert (args.command, str(args.file), args.force) == ("restore", "b.db", True)
    args = parser.parse_args(["doctor", "--broker", "mqtt://h", "--window", "0.5"])
    assert (args.command, args.broker, args.window) == ("doctor", "mqtt://h", 0.5)


def test_agent_credentials_delegates_to_its_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    class Fake:
        @staticmethod
        def add_arguments(parser: object) -> None:
            parser.add_argument("name")  # type: ignore[attr-defined]

        @staticmethod
        def run(args: object) -> int:
            calls.append(args.name)  # type: ignore[attr-defined]
            return 3

    monkeypatch.setattr(commands, "_credentials_module", lambda: Fake)
    assert main(["agent-credentials", "gpu-0"]) == 3
    assert calls == ["gpu-0"]


def test_agent_credentials_without_its_module_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(commands, "_credentials_module", lambda: None)
    assert main(["agent-credentials"]) == 2
    assert capsys.readouterr().err.strip() == (
        "nasd agent-credentials: error: agent-credentials is not available in this installation"
    )
