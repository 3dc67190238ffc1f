"""Looking at a run: the gallery page (``DIR/index.html``) with its report of
plots, and the live dashboard of a running ``Scheduler``.

It reads what the lower layers wrote (the journal, ``results.jsonl``, the
scheduler's events and counters) and writes HTML; it never prints.

::

    from lumasched.gallery import write_gallery
    write_gallery("out")                 # out/index.html, thumbnails in out/.gallery/

    async with Dashboard(scheduler) as dashboard:   # http://127.0.0.1:PORT/
        print(dashboard.url)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lumasched.gallery._page import GALLERY_NAME, write_gallery
from lumasched.gallery._report import report_meta
from lumasched.gallery._thumbs import Thumbnailer

if TYPE_CHECKING:
    from lumasched.gallery.dashboard import Dashboard

__all__ = ["GALLERY_NAME", "Dashboard", "Thumbnailer", "report_meta", "write_gallery"]


def __getattr__(name: str) -> Any:
    # The dashboard (aiohttp.web) loads when asked for: every run writes the page,
    # few serve the dashboard.
    if name == "Dashboard":
        from lumasched.gallery.dashboard import Dashboard

        return Dashboard
    raise AttributeError(f"module 'lumasched.gallery' has no attribute {name!r}")
