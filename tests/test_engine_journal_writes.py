"""The scheduler's journal writer: group commits, order, and errors of awaited writes."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from lumasched.errors import JournalError
from lumasched.store._writes import JournalWriter
from lumasched.store.journal import Journal, NewJob


def _row(key: str) -> NewJob:
    return NewJob(key=key, kind="image", request={"prompt": key}, family="image")


async def test_concurrent_intents_share_commits(tmp_path: Path) -> None:
    """Writes awaited at the same time are committed together, each durable on return."""
    with Journal(tmp_path / "j.db") as journal:
        writes = JournalWriter(journal)
        keys = [f"k{i}" for i in range(40)]
        for key in keys:
            writes.add_soon(_row(key))
        seen: dict[str, str] = {}

        async def intent(key: str) -> None:
            await writes.record_intent(key, lease_id="L", body={"k": key}, sent_at=1.0, owner="o")
            record = journal.get(key)
            assert record is not None
            seen[key] = record.state

        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(intent, key)
        assert seen == dict.fromkeys(keys, "creating")
        assert writes.commits < len(keys) / 4


async def test_awaited_write_raises_its_own_error_others_commit(tmp_path: Path) -> None:
    """A failing awaited write raises in its caller; writes committed with it are kept."""
    with Journal(tmp_path / "j.db") as journal:
        writes = JournalWriter(journal)
        writes.add_soon(_row("a"))
        results: dict[str, object] = {}

        async def submitted(key: str) -> None:
            try:
                await writes.record_submitted(key, f"gen-{key}")
            except JournalError as exc:
                results[key] = exc
            else:
                results[key] = "ok"

        async with anyio.create_task_group() as tg:
            tg.start_soon(submitted, "a")
            tg.start_soon(submitted, "missing")
        assert results["a"] == "ok"
        assert isinstance(results["missing"], JournalError)
        assert journal.get("a").generation_id == "gen-a"  # type: ignore[union-attr]


async def test_after_committed_waits_for_queued_writes(tmp_path: Path) -> None:
    """after_committed() runs its callback only once the writes queued before are on disk."""
    with Journal(tmp_path / "j.db") as journal:
        writes = JournalWriter(journal)
        writes.add_soon(_row("a"))
        states: list[str | None] = []
        writes.after_committed(lambda: states.append(getattr(journal.get("a"), "state", None)))
        assert states == []
        await writes.flush()
        assert states == ["pending"]
        writes.after_committed(lambda: states.append("now"))
        assert states == ["pending", "now"]


async def test_without_journal_writes_are_no_ops() -> None:
    """A writer without a journal accepts every write and does nothing."""
    writes = JournalWriter(None)
    writes.add_soon(_row("a"))
    writes.update_soon("a", state="failed")
    await writes.record_submitted("a", "g")
    await writes.flush()
    called: list[int] = []
    writes.after_committed(lambda: called.append(1))
    assert called == [1] and writes.commits == 0


@pytest.mark.parametrize("n", [1, 3])
async def test_soon_writes_are_committed_in_order(tmp_path: Path, n: int) -> None:
    """A row and the updates queued after it are applied in the order they were queued."""
    with Journal(tmp_path / "j.db") as journal:
        writes = JournalWriter(journal)
        writes.add_soon(_row("a"))
        for i in range(n):
            writes.update_soon("a", reason=f"r{i}")
        await writes.update("a", state="queued")
        record = journal.get("a")
        assert record is not None and (record.state, record.reason) == ("queued", f"r{n - 1}")
