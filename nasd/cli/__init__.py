"""The command-line side: the ``nasd`` entry point, the control client, reports, progress and
the all-in-one local runner. Imports its heavy parts lazily, so ``nasd --help`` stays fast."""

from nasd.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
