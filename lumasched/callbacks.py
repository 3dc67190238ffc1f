"""The old home of ``lumasched.engine.callbacks``, kept so existing imports keep working
(see docs/architecture.md for where everything lives now)."""

from lumasched.engine.callbacks import *  # noqa: F403
from lumasched.engine.callbacks import __all__ as __all__
