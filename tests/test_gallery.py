"""The gallery page of a run (DIR/index.html): every item, thumbnails and posters,
chains, failures first, the report's plots, and `lumasched gallery DIR`."""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import pytest

from lumasched import cli
from lumasched.gallery import write_gallery
from lumasched.gallery._collect import Item, collect
from lumasched.gallery._report import _fastest, build_report
from tests import _cli_fixtures as fx
from tests._cli_fixtures import MIXED_ITEMS, ThreadedEmulator, write_jsonl

emulator = fx.emulator
cli_env = fx.cli_env
limits_file = fx.limits_file

FAILING = {"id": "bad", "model": "photon-1", "prompt": "a fox fail:blacklisted"}


def _run(tmp_path: Path, limits_file: Path, items: list[dict[str, object]]) -> Path:
    manifest = write_jsonl(tmp_path / "shots.jsonl", items)
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--limits", str(limits_file)]
    cli.main([*args, "--no-progress"])
    return out


def _cards(page: str) -> dict[str, str]:
    """Item id -> the HTML of its card."""
    found = re.findall(r'<article class="card [^"]*" id="item-([^"]+)".*?</article>', page, re.S)
    bodies = re.findall(r'(<article class="card [^"]*" id="item-[^"]+".*?</article>)', page, re.S)
    return dict(zip(found, bodies, strict=True))


def test_run_writes_a_gallery_of_every_item(
    cli_env: ThreadedEmulator, tmp_path: Path, limits_file: Path
) -> None:
    """`lumasched run` leaves DIR/index.html with a card per item: thumbnail or poster,
    prompt, model, state and cost; the failure first, with its reason."""
    out = _run(tmp_path, limits_file, [*MIXED_ITEMS, FAILING])
    page = (out / "index.html").read_text()
    cards = _cards(page)
    assert set(cards) == {item["id"] for item in [*MIXED_ITEMS, FAILING]}
    assert next(iter(cards)) == "bad", "failed items come first"
    assert "Contains blacklisted words" in cards["bad"]
    assert "a cat asleep on a windowsill" in cards["cat"]
    assert "photon-1" in cards["cat"] and "$" in cards["cat"]
    for key in ("cat", "owl"):
        thumb = re.search(r'<img src="([^"]+)"', cards[key])
        assert thumb is not None and (out / thumb.group(1)).is_file()
    for key in ("sea", "bear", "bear-2", "bear-hd"):
        poster = re.search(r'poster="([^"]+)"', cards[key])
        assert poster is not None and (out / poster.group(1)).stat().st_size > 0
        assert f'src="{key}.mp4"' in cards[key]


def test_the_page_needs_no_network(
    cli_env: ThreadedEmulator, tmp_path: Path, limits_file: Path
) -> None:
    """Every src and href of the page points into the folder (or inside the page)."""
    out = _run(tmp_path, limits_file, MIXED_ITEMS)
    page = (out / "index.html").read_text()
    links = re.findall(r'(?:src|href|poster)="([^"]*)"', page)
    assert links
    for link in links:
        assert not re.match(r"[a-z]+:", link), link
        assert link.startswith("#") or (out / link).is_file(), link
    assert "<script src" not in page and "<link" not in page


def test_a_chain_is_shown_together_in_order(
    cli_env: ThreadedEmulator, tmp_path: Path, limits_file: Path
) -> None:
    """text -> extend -> upscale sit side by side in one chain, source first."""
    out = _run(tmp_path, limits_file, MIXED_ITEMS)
    page = (out / "index.html").read_text()
    chains = re.findall(r"<section class=chain.*?</section>", page, re.S)
    assert len(chains) == 1
    order = re.findall(r'id="item-([^"]+)"', chains[0])
    assert order == ["bear", "bear-2", "bear-hd"]


def test_the_report_plots_the_run_against_its_limits(
    cli_env: ThreadedEmulator, tmp_path: Path, limits_file: Path
) -> None:
    """The page's report draws throughput with the optimum, concurrency against the
    cap, the window against the rate, latency and cost, with the run's counters."""
    out = _run(tmp_path, limits_file, MIXED_ITEMS)
    page = (out / "index.html").read_text()
    report = page[page.index("<section id=report>") :]
    for title in (
        "Completed items over time",
        "limit-bound optimum",
        "concurrency cap",
        "against the rate limit",
        "Latency, create to end",
        "Estimated cost by family",
    ):
        assert title in report
    assert "status requests per job" in report
    caps = re.findall(r"<title>video cap</title>", report)
    assert caps, "the video cap (4) is drawn"


def test_gallery_command_rebuilds_from_merged_results_without_a_journal(
    cli_env: ThreadedEmulator, tmp_path: Path, limits_file: Path
) -> None:
    """`lumasched gallery DIR` makes the page from results.jsonl alone (hosts' results
    merged into one folder, or a folder of an older version)."""
    out = _run(tmp_path, limits_file, MIXED_ITEMS)
    merged = tmp_path / "merged"
    merged.mkdir()
    lines = (out / "results.jsonl").read_text().splitlines()
    for line in lines:
        record = json.loads(line)
        shutil.copy(record["path"], merged)
        record["path"] = f"/elsewhere/on/host-b/{Path(record['path']).name}"
        with (merged / "results.jsonl").open("a") as file:
            file.write(json.dumps(record) + "\n")
    assert cli.main(["gallery", str(merged)]) == 0
    cards = _cards((merged / "index.html").read_text())
    assert set(cards) == {item["id"] for item in MIXED_ITEMS}
    assert 'src="sea.mp4"' in cards["sea"]


def test_gallery_command_refuses_a_folder_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder with neither journal nor results is named in the error; nothing written."""
    assert cli.main(["gallery", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "index.html").exists()


def test_regenerating_reuses_thumbnails(
    cli_env: ThreadedEmulator, tmp_path: Path, limits_file: Path
) -> None:
    """A second page of the same folder keeps the thumbnails it made (same files)."""
    out = _run(tmp_path, limits_file, MIXED_ITEMS)
    before = {p.name: p.stat().st_mtime_ns for p in (out / ".gallery").iterdir()}
    write_gallery(out)
    after = {p.name: p.stat().st_mtime_ns for p in (out / ".gallery").iterdir()}
    assert before == after and len(before) == len(MIXED_ITEMS)


def test_a_relative_out_makes_one_thumbnail_per_file(
    cli_env: ThreadedEmulator,
    tmp_path: Path,
    limits_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run makes each thumbnail as its file arrives and the page reuses it, also
    when DIR is given relative (the run and the page spell the path differently):
    one picture per file, none made twice."""
    monkeypatch.chdir(tmp_path)
    manifest = write_jsonl(tmp_path / "shots.jsonl", MIXED_ITEMS)
    args = ["run", manifest.name, "--out", "out", "--limits", str(limits_file)]
    assert cli.main([*args, "--no-progress"]) == 0
    made = sorted(p.name for p in (tmp_path / "out" / ".gallery").iterdir())
    assert len(made) == len(MIXED_ITEMS), made
    page = (tmp_path / "out" / "index.html").read_text()
    assert sorted(re.findall(r'(?:src|poster)="\.gallery/([^"]+)"', page)) == made


def test_collect_reads_results_of_an_item_the_journal_lacks(tmp_path: Path) -> None:
    """A results line for an item with no journal row still becomes an item."""
    (tmp_path / "results.jsonl").write_text(
        json.dumps({"id": "x", "state": "failed", "failure_reason": "Job failed"})
        + "\n"
        + '{"id": "cut'
    )
    data = collect(tmp_path)
    assert [(i.id, i.state, i.failure_reason) for i in data.items] == [
        ("x", "failed", "Job failed")
    ]


def test_prompts_are_escaped(tmp_path: Path) -> None:
    """A prompt with markup is shown as text, never run as HTML."""
    line = {"id": "<b>x</b>", "state": "failed", "failure_reason": "<script>alert(1)</script>"}
    (tmp_path / "results.jsonl").write_text(json.dumps(line) + "\n")
    page = write_gallery(tmp_path).read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page
    assert "<b>x</b>" not in page


def test_optimum_respects_window_and_slots() -> None:
    """The limit-bound optimum: creates wait for the window and for a free slot."""
    ends = _fastest(5, 2.0, 2, {"requests": 3, "per_seconds": 10.0})
    assert ends == [2.0, 2.0, 4.0, 12.0, 12.0]


def test_report_without_timings_has_facts_but_no_charts() -> None:
    """Items never created (an older results file) give facts, not empty plots."""
    report = build_report([Item(id="a", state="failed")], {})
    assert report.charts == []
    assert ("items", "1 failed") in report.facts


def test_a_rerun_brings_the_page_up_to_date(
    cli_env: ThreadedEmulator, tmp_path: Path, limits_file: Path
) -> None:
    """Items added to the manifest and run again appear on the page the rerun writes."""
    out = _run(tmp_path, limits_file, MIXED_ITEMS[:2])
    assert set(_cards((out / "index.html").read_text())) == {"cat", "owl"}
    _run(tmp_path, limits_file, MIXED_ITEMS[:3])
    assert set(_cards((out / "index.html").read_text())) == {"cat", "owl", "sea"}


@pytest.mark.parametrize("port", ["70000", "-1", "web"])
def test_a_bad_dashboard_port_is_refused_before_anything_is_sent(
    cli_env: ThreadedEmulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    port: str,
) -> None:
    """`--dashboard PORT` out of range (or not a number) is a usage error naming it."""
    manifest = write_jsonl(tmp_path / "shots.jsonl", MIXED_ITEMS[:1])
    args = ["run", str(manifest), "--out", str(tmp_path / "out"), "--dashboard", port]
    assert cli.main(args) == 2
    assert "--dashboard" in capsys.readouterr().err
    assert cli_env.inspect.creates_total == 0


def test_a_page_that_cannot_be_written_does_not_fail_the_run(
    cli_env: ThreadedEmulator,
    tmp_path: Path,
    limits_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The files are made: a gallery the disk refuses is a note, the run still succeeds."""
    out = tmp_path / "out"
    (out / "index.html.part").mkdir(parents=True)  # the page's temporary file cannot be made
    manifest = write_jsonl(tmp_path / "shots.jsonl", MIXED_ITEMS[:1])
    args = ["run", str(manifest), "--out", str(out), "--limits", str(limits_file)]
    assert cli.main([*args, "--no-progress"]) == 0
    assert "index.html not written" in capsys.readouterr().out
    assert (out / "cat.jpg").is_file()


def test_a_dashboard_port_in_use_ends_the_run_before_anything_is_sent(
    cli_env: ThreadedEmulator,
    tmp_path: Path,
    limits_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--dashboard PORT` on a taken port: exit 2, one line naming it, no create."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        manifest = write_jsonl(tmp_path / "shots.jsonl", MIXED_ITEMS[:1])
        args = ["run", str(manifest), "--out", str(tmp_path / "out"), "--limits", str(limits_file)]
        assert cli.main([*args, "--no-progress", "--dashboard", port]) == 2
    err = capsys.readouterr().err
    assert f"--dashboard {port}: cannot listen on 127.0.0.1" in err and "Traceback" not in err
    assert cli_env.inspect.creates_total == 0
