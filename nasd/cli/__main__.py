"""``python -m nasd.cli``: the same as the ``nasd`` command."""

import sys

from nasd.cli.commands import main

sys.exit(main())
