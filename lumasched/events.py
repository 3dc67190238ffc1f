"""The old home of ``lumasched.engine.events``, kept so existing imports keep working
(see docs/architecture.md for where everything lives now)."""

from lumasched.engine.events import *  # noqa: F403
from lumasched.engine.events import __all__ as __all__
