"""The old home of ``lumasched.engine.jobs``, kept so existing imports keep working
(see docs/architecture.md for where everything lives now)."""

from lumasched.engine.jobs import *  # noqa: F403
from lumasched.engine.jobs import __all__ as __all__
