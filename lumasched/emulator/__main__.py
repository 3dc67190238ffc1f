"""``python -m lumasched.emulator``: the same as ``lumasched emulator``."""

import sys

from lumasched.cli._emulator import main

sys.exit(main())
