"""The old home of ``lumasched.store.journal``, kept so existing imports keep working
(see docs/architecture.md for where everything lives now)."""

# also importable from here in 0.1.0
from lumasched.errors import JournalError as JournalError
from lumasched.errors import StorageError as StorageError
from lumasched.store.journal import *  # noqa: F403
from lumasched.store.journal import __all__ as __all__
