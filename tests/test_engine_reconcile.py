"""Reconcile: finding (or ruling out) the generation of a create whose answer was lost."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lumasched.api import Generation, GenerationPage
from lumasched.engine._reconcile import Match, ReconcileResult, compare_echo, find_created

T0 = 1_700_000_000.0


def _gen(i: int, at: float | None, echo: dict[str, Any] | None) -> Generation:
    created = None if at is None else datetime.fromtimestamp(at, UTC)
    return Generation(id=f"g{i}", state="queued", created_at=created, request=echo)


class ListOnly:
    """A client whose list endpoint serves ``generations`` in the order given."""

    def __init__(self, generations: list[Generation]) -> None:
        self.generations = generations
        self.calls: list[tuple[int, int]] = []

    async def list(
        self, limit: int = 100, offset: int = 0, *, retry: bool = True
    ) -> GenerationPage:
        self.calls.append((limit, offset))
        page = self.generations[offset : offset + limit]
        return GenerationPage(
            generations=tuple(page),
            count=len(self.generations),
            has_more=offset + limit < len(self.generations),
            limit=limit,
            offset=offset,
        )


BODY = {"model": "photon-1", "prompt": "a  cat"}


async def _find(client: ListOnly, *, taken: str = "", **kwargs: Any) -> ReconcileResult:
    return await find_created(
        client,  # type: ignore[arg-type]
        body=BODY,
        sent_at=T0,
        is_taken=lambda gid: gid == taken,
        **kwargs,
    )


def test_compare_echo_rules() -> None:
    """Echo matching: extra echo fields are fine, a differing field is NO, a missing one UNKNOWN."""
    assert compare_echo({**BODY, "aspect_ratio": "16:9", "type": "image"}, BODY) is Match.YES
    assert compare_echo({"model": "photon-1", "prompt": " a cat "}, BODY) is Match.YES
    assert compare_echo({"model": "photon-1", "prompt": "a dog"}, BODY) is Match.NO
    assert compare_echo({"prompt": "a cat"}, BODY) is Match.UNKNOWN
    assert compare_echo(None, BODY) is Match.UNKNOWN
    assert (
        compare_echo({"keyframes": {"frame0": {"id": "x"}}}, {"keyframes": {"frame0": {"id": "y"}}})
        is Match.NO
    )
    assert compare_echo({"loop": 1}, {"loop": True}) is Match.NO
    assert compare_echo({"w": [1, 2]}, {"w": [1, 2, 3]}) is Match.NO


async def test_finds_match_newest_first() -> None:
    """A newest-first list: the matching generation after sent_at is found."""
    gens = [_gen(i, T0 + 50 - i, {"model": "photon-1", "prompt": f"p{i}"}) for i in range(30)]
    gens.insert(5, _gen(99, T0 + 2, dict(BODY)))
    client = ListOnly(gens)
    found = await _find(
        client,
        skew=1.0,
        page_size=10,
    )
    assert found.generation is not None and found.generation.id == "g99"


async def test_absent_is_conclusive_and_stops_at_older() -> None:
    """Newest-first, no match: conclusive once a page reaches generations older than sent_at."""
    gens = [_gen(i, T0 + 20 - i, {"model": "photon-1", "prompt": f"p{i}"}) for i in range(200)]
    client = ListOnly(gens)
    found = await _find(
        client,
        skew=1.0,
        page_size=10,
    )
    assert found.generation is None and found.conclusive
    assert len(client.calls) == 3  # stopped early, did not read 20 pages


async def test_oldest_first_reads_the_tail() -> None:
    """Oldest-first list: the search jumps to the tail (count) and finds the match there."""
    gens = [_gen(i, T0 - 1000 + i, {"model": "photon-1", "prompt": f"p{i}"}) for i in range(995)]
    gens.append(_gen(999, T0 + 1, dict(BODY)))
    client = ListOnly(gens)
    found = await _find(
        client,
        skew=5.0,
        page_size=100,
    )
    assert found.generation is not None and found.generation.id == "g999"
    assert len(client.calls) == 2


async def test_taken_generations_are_not_adopted() -> None:
    """A generation another job owns is skipped even if its echo matches."""
    gens = [_gen(1, T0 + 1, dict(BODY)), _gen(2, T0 + 2, dict(BODY))]
    client = ListOnly(gens)
    found = await _find(
        client,
        taken="g1",
        skew=1.0,
    )
    assert found.generation is not None and found.generation.id == "g2"


async def test_old_generations_are_not_adopted() -> None:
    """An identical body created well before the send time is not ours."""
    client = ListOnly([_gen(1, T0 - 500, dict(BODY))])
    found = await _find(
        client,
        skew=10.0,
    )
    assert found.generation is None and found.conclusive


async def test_missing_echo_is_inconclusive() -> None:
    """A recent generation without an echo can be neither matched nor ruled out."""
    client = ListOnly([_gen(1, T0 + 1, None), _gen(2, T0 - 900, None)])
    found = await _find(
        client,
        skew=10.0,
    )
    assert found.generation is None and not found.conclusive


async def test_page_limit_is_inconclusive() -> None:
    """An unordered list longer than max_pages cannot prove absence."""
    gens = [
        _gen(i, T0 + (i * 7919 % 100), {"model": "photon-1", "prompt": f"p{i}"}) for i in range(100)
    ]
    client = ListOnly(gens)
    found = await _find(
        client,
        skew=1.0,
        page_size=10,
        max_pages=3,
    )
    assert found.generation is None and not found.conclusive
    assert len(client.calls) == 3
