"""The engine: the ``Scheduler`` and its collaborators (job table, slots,
create / follow / restore / reconcile), the poller, the downloads, and the job,
event and callback types.

It takes requests from the caller, asks ``limits`` for a slot, calls ``api``,
and records every step in ``store``; it never prints and never reads the
environment (see docs/architecture.md)."""
