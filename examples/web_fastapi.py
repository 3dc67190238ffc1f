"""A FastAPI app that generates images and videos with lumasched (docs/web-apps.md).

Needs the ``web`` extra (``pip install 'lumasched[web]'``: FastAPI and uvicorn).

    python examples/web_fastapi.py --emulator            # offline, on the built-in emulator
    LUMAAI_API_KEY=... python examples/web_fastapi.py --public-url https://my.tunnel.example

The same routes as examples/web_aiohttp.py: POST /generate, GET /jobs/{key},
/jobs/{key}/file, /jobs/{key}/events (SSE), Luma's callbacks under /luma/callback.
Stopping the server stops creating and leaves what is in flight in the journal in
the output folder; the next start picks it up. Old assets are pruned hourly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import Body, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

import lumasched
from lumasched.web import SSE_HEADERS, CallbackASGI, job_snapshot, sse_stream

CALLBACK_PATH = "/luma/callback"
PRUNE_EVERY = 3600.0


def make_app(
    out_dir: str | Path,
    *,
    public_url: str | None = None,
    keep_seconds: float = 24 * 3600,
    **luma_options: Any,
) -> FastAPI:
    """The app; ``luma_options`` go to ``lumasched.Luma`` (api_key, base_url, ...)."""
    callback_base = f"{public_url.rstrip('/')}{CALLBACK_PATH}" if public_url else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with lumasched.Luma(out_dir, callback_base_url=callback_base, **luma_options) as luma:
            app.state.luma = luma

            async def prune_forever() -> None:
                while True:
                    luma.prune(max_age=keep_seconds)
                    await asyncio.sleep(PRUNE_EVERY)

            pruning = asyncio.create_task(prune_forever())
            try:
                yield
            finally:
                pruning.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pruning

    app = FastAPI(lifespan=lifespan)
    app.mount(CALLBACK_PATH, CallbackASGI(lambda: app.state.luma))

    def luma_of(request: Request) -> lumasched.Luma:
        luma: lumasched.Luma = request.app.state.luma
        return luma

    def job_of(request: Request, key: str) -> lumasched.Job:
        job = luma_of(request).get(key)
        if job is None:
            raise HTTPException(404, "no such job")
        return job

    @app.post("/generate", status_code=202)
    async def generate(request: Request, body: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
        kind = str(body.pop("kind", "image"))
        key = body.pop("key", None)
        try:
            job = luma_of(request).submit(lumasched.request_from_dict(kind, body), key=key)
        except lumasched.ValidationError as exc:
            problems = [{"field": p.path, "message": p.message} for p in exc.problems]
            return JSONResponse({"problems": problems}, status_code=422)
        return {
            **job_snapshot(job),
            "status_url": f"jobs/{job.key}",
            "events_url": f"jobs/{job.key}/events",
            "file_url": f"jobs/{job.key}/file",
        }

    @app.get("/jobs/{key}")
    async def status(request: Request, key: str) -> dict[str, Any]:
        return job_snapshot(job_of(request, key))

    @app.get("/jobs/{key}/file")
    async def file(request: Request, key: str) -> FileResponse:
        path = job_snapshot(job_of(request, key)).get("path")
        if not path or not await anyio.Path(path).is_file():
            raise HTTPException(409, "no file (yet): see the job's state")
        return FileResponse(path)

    @app.get("/jobs/{key}/events")
    async def events(request: Request, key: str) -> StreamingResponse:
        stream = sse_stream(luma_of(request), key)
        try:
            first = await anext(stream)
        except KeyError:
            raise HTTPException(404, "no such job") from None

        async def body() -> AsyncIterator[bytes]:
            yield first
            async for chunk in stream:
                yield chunk

        return StreamingResponse(body(), headers=SSE_HEADERS)

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--out", default="out")
    parser.add_argument("--public-url", help="where Luma's callbacks can reach this app")
    parser.add_argument("--keep-hours", type=float, default=24.0)
    parser.add_argument("--emulator", action="store_true", help="run on the built-in emulator")
    args = parser.parse_args()

    async def serve() -> None:
        options: dict[str, Any] = {}
        async with contextlib.AsyncExitStack() as stack:
            if args.emulator:
                emu = await stack.enter_async_context(lumasched.Emulator(speed=20))
                options = {"api_key": "example", "base_url": emu.base_url}
            public = args.public_url or f"http://127.0.0.1:{args.port}"
            app = make_app(
                args.out, public_url=public, keep_seconds=args.keep_hours * 3600, **options
            )
            await uvicorn.Server(uvicorn.Config(app, port=args.port)).serve()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
