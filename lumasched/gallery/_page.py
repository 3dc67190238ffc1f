"""``DIR/index.html``: every item of a run on one self-contained page.

No network at view time and no script needed to see the items: thumbnails
and posters are files beside the page, styles and the filter script are
inlined, charts are inline SVG. Images load lazily and videos fetch nothing
until played, so a page of thousands of items opens at once."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from html import escape
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from lumasched.gallery._collect import Item, RunData, collect
from lumasched.gallery._report import Report, build_report
from lumasched.gallery._thumbs import Thumbnailer

__all__ = ["GALLERY_NAME", "render_gallery", "write_gallery"]

GALLERY_NAME = "index.html"
_STATE_ORDER = ("failed", "cancelled", "completed")


def write_gallery(out_dir: str | Path, *, journal_path: Path | None = None) -> Path:
    """Write (or bring up to date) ``out_dir/index.html`` and its thumbnails; returns
    the page's path. Reads the journal (if there is one) and ``results.jsonl``."""
    out = Path(out_dir)
    data = collect(out, journal_path=journal_path)
    page = render_gallery(data, Thumbnailer(data.out_dir))
    target = data.out_dir / GALLERY_NAME
    part = target.with_name(target.name + ".part")
    part.write_text(page, encoding="utf-8")
    os.replace(part, target)
    return target


def render_gallery(data: RunData, thumbs: Thumbnailer) -> str:
    items = data.items
    thumbs.prepare(
        (i.path for i in items if i.path is not None and i.media == "image"),
        (i.path for i in items if i.path is not None and i.media == "video"),
    )
    report = build_report(items, data.meta)
    groups = _chains(items)
    # failed chains first, then the rest in submission order
    groups.sort(key=lambda g: 0 if any(i.state in ("failed", "cancelled") for i in g) else 1)
    body = "".join(_group(g, data.out_dir, thumbs) for g in groups)
    states = sorted({i.state for i in items}, key=_state_rank)
    families = sorted({i.family for i in items})
    title = f"lumasched: {data.out_dir.name}"
    made = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_static('gallery.css')}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><div class=sub>{len(items)} items · "
        f"<span id=shown-count>{len(items)}</span> shown · page made {made} · "
        "<a href='#report'>run report</a></div></header>"
        '<nav class=filters aria-label="filters">'
        f"{_filter('state', states, items)}{_filter('family', families, items)}</nav>"
        f"<main><div class=grid>{body}</div></main>{_report(report)}"
        f"<script>{_static('gallery.js')}</script></body></html>\n"
    )


def _static(name: str) -> str:
    return resources.files("lumasched.gallery").joinpath("static", name).read_text("utf-8")


def _state_rank(state: str) -> tuple[int, str]:
    return (_STATE_ORDER.index(state) if state in _STATE_ORDER else 1, state)


def _filter(name: str, values: Sequence[str], items: Sequence[Item]) -> str:
    buttons = "".join(
        f'<button type=button data-filter="{name}" data-value="{escape(v)}" '
        f'aria-pressed="false">{escape(v)} '
        f"<span class=small>{sum(1 for i in items if getattr(i, name) == v)}</span></button>"
        for v in values
    )
    return f"<fieldset><legend>{name}</legend>{buttons}</fieldset>"


def _chains(items: Sequence[Item]) -> list[list[Item]]:
    """Items grouped into chains (an extend after its source, an upscale after its
    original), each chain in submission order; a lone item is a chain of one."""
    by_id = {i.id: i for i in items}
    root: dict[str, str] = {}

    def find(key: str) -> str:
        while root.get(key, key) != key:
            key = root[key]
        return key

    for item in items:
        root.setdefault(item.id, item.id)
        for dep in item.depends_on:
            if dep in by_id:
                root.setdefault(dep, dep)
                a, b = find(item.id), find(dep)
                if a != b:
                    root[a] = b
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(find(item.id), []).append(item)
    return list(groups.values())


def _group(items: list[Item], out_dir: Path, thumbs: Thumbnailer) -> str:
    if len(items) == 1:
        return _card(items[0], out_dir, thumbs)
    arrow = '<span class=arrow aria-hidden="true">→</span>'
    inner = arrow.join(_card(i, out_dir, thumbs) for i in items)
    return f'<section class=chain aria-label="chain">{inner}</section>'


def _url(path: Path, out_dir: Path) -> str:
    try:
        relative = path.relative_to(out_dir)
    except ValueError:
        return path.as_uri()
    return quote(relative.as_posix())


def _media(item: Item, out_dir: Path, thumbs: Thumbnailer) -> str:
    path = item.path
    if path is None or item.media is None:
        if item.failure_reason:
            what = "failed"
        else:
            what = "no file yet" if path is None else "not an image or video"
        return f"<div class=none>{escape(what)}</div>"
    src = _url(path, out_dir)
    alt = escape(item.prompt or item.id)
    if item.media == "image":
        thumb = thumbs.thumbnail(path)
        shown = _url(thumb, out_dir) if thumb else src
        return f'<a href="{src}"><img src="{shown}" alt="{alt}" loading=lazy decoding=async></a>'
    poster = thumbs.poster(path)
    if poster is not None:
        return (
            f'<video src="{src}" poster="{_url(poster, out_dir)}" controls muted '
            f'preload=none playsinline title="{alt}"></video>'
        )
    return f'<video src="{src}" controls muted preload=metadata playsinline title="{alt}"></video>'


def _when(at: float | None) -> str:
    if at is None:
        return "–"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%H:%M:%S")


def _seconds(a: float | None, b: float | None) -> str:
    if a is None or b is None or b < a:
        return "–"
    return f"{b - a:.1f}s"


def _card(item: Item, out_dir: Path, thumbs: Thumbnailer) -> str:
    lines = [
        f"<h3>{escape(item.id)}</h3>",
        f"<div><span class='badge {escape(item.state)}'>{escape(item.state)}</span> "
        f"<span class=small>{escape(item.model or item.kind)} · {escape(item.family)}"
        f"{' · ' + escape(item.kind) if item.model and item.kind != item.family else ''}"
        "</span></div>",
    ]
    if item.prompt:
        lines.append(f"<p class=prompt>{escape(item.prompt)}</p>")
    if item.depends_on:
        lines.append(f"<div class=small>from {escape(', '.join(item.depends_on))}</div>")
    if item.failure_reason:
        lines.append(f"<p class=reason>{escape(item.failure_reason)}</p>")
    timing = (
        f"queued {_when(item.queued)} · created {_when(item.created)} · "
        f"dreamt {_seconds(item.created, item.completed)} · "
        f"download {_seconds(item.completed, item.downloaded)}"
    )
    lines.append(f"<div class=small>{timing}</div>")
    money = "–" if item.cost_cents is None else f"${item.cost_cents / 100:,.2f}"
    size = "" if item.bytes is None else f" · {_size(item.bytes)}"
    lines.append(f"<div class=small>cost {money}{size}</div>")
    details = dict(item.options)
    if item.generation_id:
        details["generation_id"] = item.generation_id
    if not item.in_manifest:
        details["in_manifest"] = False
    if details:
        text = escape(json.dumps(details, indent=1, ensure_ascii=False, sort_keys=True))
        lines.append(f"<details><summary>options</summary><pre>{text}</pre></details>")
    return (
        f'<article class="card {escape(item.state)}" id="item-{escape(item.id)}" '
        f'data-state="{escape(item.state)}" data-family="{escape(item.family)}">'
        f"<div class=media>{_media(item, out_dir, thumbs)}</div>"
        f"<div class=meta>{''.join(lines)}</div></article>"
    )


def _size(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1e6:,.1f} MB"
    return f"{count / 1e3:,.1f} kB"


def _report(report: Report) -> str:
    facts = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in report.facts)
    charts = "".join(report.charts)
    return (
        "<section id=report><h2>Run report</h2>"
        f"<dl>{facts}</dl><div class=charts>{charts}</div></section>"
    )
