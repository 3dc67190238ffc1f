"""The old home of ``lumasched.engine.scheduler``, kept so existing imports keep working
(see docs/architecture.md for where everything lives now)."""

from lumasched.engine.scheduler import *  # noqa: F403

# also importable from here in 0.1.0
from lumasched.engine.scheduler import DEFAULT_MAX_PENDING as DEFAULT_MAX_PENDING
from lumasched.engine.scheduler import DEFAULT_RECONCILE_GIVE_UP as DEFAULT_RECONCILE_GIVE_UP
from lumasched.engine.scheduler import DEFAULT_RECONCILE_INTERVAL as DEFAULT_RECONCILE_INTERVAL
from lumasched.engine.scheduler import DEFAULT_RECONCILE_SETTLE as DEFAULT_RECONCILE_SETTLE
from lumasched.engine.scheduler import __all__ as __all__
