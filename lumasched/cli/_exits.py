"""The exit statuses of ``lumasched`` (sysexits where one fits)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69
"""sysexits EX_UNAVAILABLE: the API could not be reached (nothing lost; rerun)."""
EXIT_STORAGE = 74
"""sysexits' EX_IOERR: the journal or results file cannot be written."""
EXIT_CLAIMS_WAIT = 75
"""sysexits EX_TEMPFAIL: with --redis, items wait because Redis lost its state and
a host that is gone may have made them; nothing was lost (docs/multihost.md)."""
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
"""128 + SIGTERM, as a shell reports a process SIGTERM ended."""
