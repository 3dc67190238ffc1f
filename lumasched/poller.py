"""The old home of ``lumasched.engine.poller``, kept so existing imports keep working
(see docs/architecture.md for where everything lives now)."""

from lumasched.engine.poller import *  # noqa: F403

# also importable from here in 0.1.0
from lumasched.engine.poller import OnError as OnError
from lumasched.engine.poller import OnUpdate as OnUpdate
from lumasched.engine.poller import __all__ as __all__
