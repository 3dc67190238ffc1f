"""What the collaborators of one ``Scheduler`` share (creator, follower,
restorer): built once by the scheduler and handed to each, so a new shared
piece is one field here rather than one more argument everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from lumasched._clock import Clock
    from lumasched.api import LumaClient
    from lumasched.engine._jobtable import JobTable
    from lumasched.engine._slots import Slots
    from lumasched.store._writes import JournalWriter

__all__ = ["EngineContext"]


@attrs.frozen
class EngineContext:
    client: LumaClient
    table: JobTable
    """every job not yet released, and the dependencies between them"""
    slots: Slots
    writes: JournalWriter
    """the journal, written in order through the group commit"""
    clock: Clock
    spawn: Callable[..., None]
    """``spawn(fn, *args)`` starts a task in the scheduler's task group"""
    out_dir: Path | None
    """where downloads go (None: nothing is downloaded)"""
