"""Storage: the SQLite journal (group commit on a writer thread), the results
files, and the helpers that turn disk failures into ``StorageError``.

Only this package and the downloads write files. It imports nothing above it
(see docs/architecture.md)."""
