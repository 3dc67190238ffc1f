"""``python -m lumasched.emulator``: the same as ``lumasched emulator``."""

import sys

from lumasched.emulator import main

sys.exit(main())
