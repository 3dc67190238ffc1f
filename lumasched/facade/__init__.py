"""The one-object face of lumasched: ``Luma`` (async) and ``LumaSync`` (blocking,
on its own loop in a background thread), which own the client, the limiter, the
journal and the scheduler. The layer sits above the engine and below ``web/``.
"""

from lumasched.facade._luma import DEFAULT_OUT_DIR, JOURNAL_NAME, ExitPolicy, Luma
from lumasched.facade._sync import LumaSync, generate_sync

__all__ = ["DEFAULT_OUT_DIR", "JOURNAL_NAME", "ExitPolicy", "Luma", "LumaSync", "generate_sync"]
