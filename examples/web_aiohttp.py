"""An aiohttp app that generates images and videos with lumasched (docs/web-apps.md).

    python examples/web_aiohttp.py --emulator            # offline, on the built-in emulator
    LUMAAI_API_KEY=... python examples/web_aiohttp.py --public-url https://my.tunnel.example

Routes:
    POST /generate              {"kind": "image", "prompt": "...", "key": "optional"} -> 202
    GET  /jobs/{key}            the job's state (and path, error) as JSON
    GET  /jobs/{key}/file       the finished file
    GET  /jobs/{key}/events     Server-Sent Events: queued -> dreaming -> completed
    POST /luma/callback/{token} Luma's callbacks (with --public-url), verified hints
    GET  /                      a page that submits a prompt and shows its progress

Shutting down (Ctrl-C) stops creating and leaves what is in flight in the journal in
--out; the next start picks it up. Assets older than --keep-hours are deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web

import lumasched
from lumasched.web import LUMA_KEY, callback_app, events_handler, job_snapshot, luma_context

CALLBACK_PATH = "/luma/callback"
PRUNE_EVERY = 600.0

PAGE = """<!doctype html><meta charset="utf-8"><title>lumasched</title>
<form id="f"><input name="prompt" size="50" placeholder="a fox in the snow">
<button>generate</button></form><pre id="log"></pre>
<script>
f.onsubmit = async (e) => {
  e.preventDefault();
  const r = await fetch("generate", {method: "POST",
    body: JSON.stringify({kind: "image", prompt: f.prompt.value})});
  const job = await r.json();
  if (!r.ok) { log.textContent += JSON.stringify(job) + "\\n"; return; }
  const es = new EventSource(job.events_url);
  es.addEventListener("job", (m) => {
    const d = JSON.parse(m.data);
    log.textContent += d.key + " " + d.state + "\\n";
    if (d.path || d.error) { es.close();
      if (d.path) log.innerHTML += `<a href="${job.file_url}">${d.key}</a>\\n`; }
  });
};
</script>"""


def luma_of(request: web.Request) -> lumasched.Luma:
    return request.config_dict[LUMA_KEY]


async def generate(request: web.Request) -> web.Response:
    try:
        body: dict[str, Any] = await request.json()
        kind = str(body.pop("kind", "image"))
        key = body.pop("key", None)
        job = luma_of(request).submit(lumasched.request_from_dict(kind, body), key=key)
    except lumasched.ValidationError as exc:
        problems = [{"field": p.path, "message": p.message} for p in exc.problems]
        return web.json_response({"problems": problems}, status=422)
    except (ValueError, AttributeError):
        return web.json_response({"problems": [{"message": "expected a JSON object"}]}, 400)
    return web.json_response(
        {
            **job_snapshot(job),
            "status_url": f"jobs/{job.key}",
            "events_url": f"jobs/{job.key}/events",
            "file_url": f"jobs/{job.key}/file",
        },
        status=202,
    )


def _job(request: web.Request) -> lumasched.Job:
    job = luma_of(request).get(request.match_info["key"])
    if job is None:
        raise web.HTTPNotFound(text="no such job")
    return job


async def status(request: web.Request) -> web.Response:
    return web.json_response(job_snapshot(_job(request)))


async def file(request: web.Request) -> web.StreamResponse:
    path = job_snapshot(_job(request)).get("path")
    if not path or not await anyio.Path(path).is_file():
        raise web.HTTPConflict(text="no file (yet): see the job's state")
    return web.FileResponse(path)


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


def retention(keep_seconds: float, every: float = PRUNE_EVERY) -> Any:
    """A cleanup_ctx that deletes assets older than ``keep_seconds`` now and then."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async def prune_forever() -> None:
            while True:
                app[LUMA_KEY].prune(max_age=keep_seconds)
                await asyncio.sleep(every)

        task = asyncio.create_task(prune_forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


def make_app(
    out_dir: str | Path,
    *,
    public_url: str | None = None,
    keep_seconds: float = 24 * 3600,
    **luma_options: Any,
) -> web.Application:
    """The app; ``luma_options`` go to ``lumasched.Luma`` (api_key, base_url, ...)."""
    app = web.Application()
    callback_base = f"{public_url.rstrip('/')}{CALLBACK_PATH}" if public_url else None
    app.cleanup_ctx.append(
        luma_context(out_dir=out_dir, callback_base_url=callback_base, **luma_options)
    )
    app.cleanup_ctx.append(retention(keep_seconds))
    app.add_subapp(CALLBACK_PATH, callback_app())
    app.router.add_get("/", page)
    app.router.add_post("/generate", generate)
    app.router.add_get("/jobs/{key}", status)
    app.router.add_get("/jobs/{key}/file", file)
    app.router.add_get("/jobs/{key}/events", events_handler)
    return app


async def _serve(args: argparse.Namespace) -> None:
    options: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        if args.emulator:
            emu = await stack.enter_async_context(lumasched.Emulator(speed=20))
            options = {"api_key": "example", "base_url": emu.base_url}
        public = args.public_url or f"http://127.0.0.1:{args.port}"
        app = make_app(args.out, public_url=public, keep_seconds=args.keep_hours * 3600, **options)
        runner = web.AppRunner(app)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print(f"serving on http://127.0.0.1:{args.port}/  (Ctrl-C to stop)")
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--out", default="out")
    parser.add_argument("--public-url", help="where Luma's callbacks can reach this app")
    parser.add_argument("--keep-hours", type=float, default=24.0)
    parser.add_argument("--emulator", action="store_true", help="run on the built-in emulator")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
