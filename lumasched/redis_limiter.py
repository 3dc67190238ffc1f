"""The old home of ``lumasched.limits.redis``, kept so existing imports keep working
(see docs/architecture.md for where everything lives now)."""

from lumasched.limits.redis import *  # noqa: F403

# also importable from here in 0.1.0
from lumasched.limits.redis import DEFAULT_ORPHAN_MAX as DEFAULT_ORPHAN_MAX
from lumasched.limits.redis import DEFAULT_POLL_MAX as DEFAULT_POLL_MAX
from lumasched.limits.redis import __all__ as __all__
