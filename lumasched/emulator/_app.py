"""The aiohttp application: API routes, asset routes, control routes."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from lumasched._config import MAX_INPUT_VIDEO_BYTES
from lumasched.api._inputs import EMULATOR_UPLOADS_PATH
from lumasched.emulator._assets import VideoFile, VideoShape, parse_range, render_image
from lumasched.emulator._config import Faults
from lumasched.emulator._inputs import valid_key
from lumasched.emulator._state import Record, format_retry_after
from lumasched.emulator._stats import body_fingerprint
from lumasched.emulator._validate import CONCEPTS, ApiError, validate_create

if TYPE_CHECKING:
    from lumasched.emulator._emulator import Emulator

__all__ = ["API_PREFIX", "CAMERA_MOTIONS", "build_app"]

API_PREFIX = "/dream-machine/v1"

CAMERA_MOTIONS: tuple[str, ...] = (
    "camera orbit left",
    "camera orbit right",
    "camera pan left",
    "camera pan right",
    "camera push in",
    "camera pull out",
    "camera crane up",
    "camera crane down",
    "camera tilt up",
    "camera tilt down",
    "camera zoom in",
    "camera zoom out",
    "camera static",
    "camera handheld",
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("lumasched.emulator")
_NOT_FOUND = "Generation not found"


MAX_JSON_DEPTH = 32
"""The deepest request body accepted (the deepest valid one nests 4 levels)."""


def _depth(value: Any) -> int:
    """How deeply ``value`` nests (iterative: a hostile body cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            break
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        stack.extend((child, level + 1) for child in children)
    return deepest


def _detail(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


class _Routes:
    """Request handlers; all state lives on the ``Emulator``."""

    def __init__(self, emu: Emulator):
        self.emu = emu

    # -- plumbing ----------------------------------------------------------------
    @staticmethod
    @web.middleware
    async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        """One INFO line per request (``lumasched emulator -v``); never the headers."""
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            log.info("%s %s -> %d", request.method, request.path_qs, exc.status)
            raise
        log.info("%s %s -> %d", request.method, request.path_qs, response.status)
        return response

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        name = request.match_info.route.name or ""
        group, _, _ = name.partition(":")
        if group == "control":
            try:
                if self.emu.config.api_key is not None:
                    self._authenticate(request)
            except ApiError as exc:
                return _detail(exc.status, exc.detail, exc.headers)
            return await handler(request)
        if group not in ("api", "asset"):
            if not request.path.startswith(API_PREFIX):
                return await handler(request)
            try:
                return await handler(request)
            except web.HTTPException as exc:  # unknown path or method: JSON like the API
                if exc.status < 400:
                    raise
                allow = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
                return _detail(exc.status, exc.reason, allow)
        emu = self.emu
        route = name.split(":")[1] if group == "api" else "asset"
        emu.inspect.count(emu.inspect.requests_by_route, route)
        try:
            if group == "api":
                self._authenticate(request)
            status = emu.faults.status_for(route)
            if status is not None:
                headers = format_retry_after(1.0) if status == 429 else None
                raise ApiError(status, f"Injected fault: HTTP {status}", headers)
            response = await handler(request)
        except ApiError as exc:
            response = _detail(exc.status, exc.detail, exc.headers)
        emu.inspect.count(emu.inspect.responses_by_status, response.status)
        return response

    def _authenticate(self, request: web.Request) -> None:
        """401 unless ``Authorization: Bearer <token>`` is well formed (and, with a
        pinned key, the token is that key). A header that is not printable ASCII
        (undecodable bytes included) is malformed, never a crash."""
        header = request.headers.get("Authorization")
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        if header is None:
            problem = "Missing API key: send 'Authorization: Bearer <key>'"
        elif (
            scheme.lower() != "bearer"
            or not token
            or not token.isascii()
            or not token.isprintable()
            or " " in token
        ):
            problem = "Malformed Authorization header: expected 'Bearer <key>'"
        else:
            key = self.emu.config.api_key
            if key is None or hmac.compare_digest(token.encode(), key.encode()):
                return
            problem = "Invalid API key is provided"
        self.emu.inspect.unauthorized += 1
        raise ApiError(401, problem)

    def render(self, record: Record, at: float) -> dict[str, Any]:
        return record.to_json(at, self._assets)

    def _assets(self, record: Record) -> dict[str, str | None]:
        emu = self.emu
        if record.media == "image":
            ext = "png" if record.spec.image_format == "png" else "jpg"
            return {
                "video": None,
                "image": emu.asset_url(record, f"image.{ext}"),
                "progress_video": None,
            }
        return {
            "video": emu.asset_url(record, "video.mp4"),
            "image": emu.asset_url(record, "thumb.jpg"),
            "progress_video": None,
        }

    async def _body(self, request: web.Request) -> dict[str, Any]:
        """The JSON object a request carries; 400 for anything else (bad JSON,
        undecodable Content-Encoding, nesting past ``MAX_JSON_DEPTH``), 413 past
        the server's body size limit. Never a 500."""
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise ApiError(413, f"Request body too large: {exc.text}") from None
        except (RequestPayloadError, HttpProcessingError) as exc:
            encoding = request.headers.get("Content-Encoding", "")
            raise ApiError(400, f"Unreadable request body ({encoding or 'no'} encoding)") from exc
        try:
            body = json.loads(raw or b"{}")
        except RecursionError:
            raise ApiError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError:
            raise ApiError(400, "Invalid JSON body") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object")
        if _depth(body) > MAX_JSON_DEPTH:
            raise ApiError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return body

    # -- creates ---------------------------------------------------------------
    async def _create(self, request: web.Request, kind: str) -> web.StreamResponse:
        emu = self.emu
        body = await self._body(request)
        source_id = request.match_info.get("id")
        now = time.monotonic()
        emu.store.settle(now)
        if source_id is not None and emu.store.get(source_id) is None:
            raise ApiError(404, _NOT_FOUND)
        spec = validate_create(
            kind,
            body,
            emu.store.get,
            source_id=source_id,
            default_video_model=emu.config.default_video_model,
        )
        if spec.input_urls and not await emu.inputs.readable(spec.input_urls):
            spec = attrs.evolve(spec, inputs_unreadable=True)
            now = time.monotonic()
            emu.store.settle(now)
        emu.store.admit(spec.family, now)
        fingerprint = body_fingerprint(kind, source_id, body)
        record = emu.store.create(spec, body, now, fingerprint)
        emu.inspect.note_create(kind, fingerprint)
        emu.callbacks.schedule(record)
        if emu.faults.drop_after_create():
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=201)
        if emu.faults.faults.create_response_delay:
            await asyncio.sleep(emu.faults.faults.create_response_delay)
        if kind == "image" and body.get("sync") is True:
            timeout = body.get("sync_timeout") or 60.0
            await asyncio.sleep(min(record.timeline.done_at - time.monotonic(), timeout))
            emu.store.settle(time.monotonic())
        status = 200 if kind in ("upscale", "audio") else 201
        return web.json_response(self.render(record, time.monotonic()), status=status)

    def creator(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._create(request, kind)

        return handler

    # -- reads -------------------------------------------------------------------
    async def get(self, request: web.Request) -> web.StreamResponse:
        emu = self.emu
        emu.inspect.gets += 1
        now = time.monotonic()
        emu.store.settle(now)
        record = emu.store.get(request.match_info["id"])
        if record is None:
            raise ApiError(404, _NOT_FOUND)
        return web.json_response(self.render(record, now))

    async def list(self, request: web.Request) -> web.StreamResponse:
        emu = self.emu
        emu.inspect.lists += 1
        limit = self._int_param(request, "limit", 100, minimum=1)
        offset = self._int_param(request, "offset", 0, minimum=0)
        now = time.monotonic()
        emu.store.settle(now)
        records, has_more = emu.store.page(limit, offset)
        return web.json_response(
            {
                "generations": [self.render(r, now) for r in records],
                "count": len(records),
                "has_more": has_more,
                "limit": limit,
                "offset": offset,
            }
        )

    @staticmethod
    def _int_param(request: web.Request, name: str, default: int, *, minimum: int) -> int:
        text = request.query.get(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ApiError(400, f"{name} must be an integer") from None
        if value < minimum:
            raise ApiError(400, f"{name} must be >= {minimum}")
        return value

    async def delete(self, request: web.Request) -> web.StreamResponse:
        emu = self.emu
        emu.inspect.deletes += 1
        emu.store.settle(time.monotonic())
        if not emu.store.delete(request.match_info["id"]):
            raise ApiError(404, _NOT_FOUND)
        return web.Response(status=204)

    async def concepts(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(list(CONCEPTS))

    async def camera_motions(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(list(CAMERA_MOTIONS))

    async def credits(self, request: web.Request) -> web.StreamResponse:
        self.emu.store.settle(time.monotonic())
        return web.json_response({"credit_balance": round(self.emu.store.balance_cents, 4)})

    async def ping(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"message": "pong"})

    # -- assets ------------------------------------------------------------------
    async def asset(self, request: web.Request) -> web.StreamResponse:
        emu = self.emu
        gen_id, name = request.match_info["id"], request.match_info["name"]
        try:
            version = int(request.match_info["version"])
        except ValueError:
            raise ApiError(404, "Not found") from None
        now = time.monotonic()
        emu.store.settle(now)
        record = emu.store.get(gen_id)
        if record is None or record.state_at(now) != "completed" or version > record.version:
            raise ApiError(404, "Not found")
        signed = emu.signer.check(request.path, dict(request.query))
        if signed is None:
            raise ApiError(403, "Access denied: bad signature")
        issued_ms, expires_ms = signed
        wall_ms = time.time() * 1000
        if (expires_ms is not None and wall_ms > expires_ms) or emu.faults.url_expired(
            issued_ms / 1000
        ):
            emu.inspect.expired_url_hits += 1
            raise ApiError(403, "Access denied: request has expired")
        return await self._serve(request, record, version, name)

    async def _serve(
        self, request: web.Request, record: Record, version: int, name: str
    ) -> web.StreamResponse:
        emu = self.emu
        spec = record.spec
        shape = VideoShape(spec.aspect_ratio, spec.resolution, spec.seconds, spec.audio)
        if name == "video.mp4" and record.media == "video":
            video = VideoFile.for_generation(
                f"{record.id} v{version}", shape, emu.config.video_padding_bytes
            )
            size, content_type = video.size, "video/mp4"
            chunks = video.iter_range
        elif name in ("image.jpg", "image.png", "thumb.jpg"):
            fmt = "png" if name.endswith(".png") else "jpg"
            thumb = shape.size if record.media == "video" else None
            data = render_image(
                f"{record.id} v{version}", record.aspect_ratio, fmt, emu.config.image_scale, thumb
            )
            size, content_type = len(data), "image/png" if fmt == "png" else "image/jpeg"

            def chunks(start: int, end: int, chunk: int = 64 * 1024) -> Any:
                return (data[i : min(end, i + chunk)] for i in range(start, end, chunk))
        else:
            raise ApiError(404, "Not found")
        headers = {
            "Content-Type": content_type,
            "Accept-Ranges": "bytes",
            "ETag": f'"{record.id}-{version}-{size}"',
        }
        start, end, status = 0, size, 200
        if "Range" in request.headers:
            try:
                span = parse_range(request.headers["Range"], size)
            except ValueError:
                span = (0, size)
            else:
                if span is None:
                    headers["Content-Range"] = f"bytes */{size}"
                    return web.Response(status=416, headers=headers)
                status = 206
                headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{size}"
            start, end = span
        headers["Content-Length"] = str(end - start)
        response = web.StreamResponse(status=status, headers=headers)
        if request.method == "HEAD":
            await response.prepare(request)
            return response
        emu.inspect.downloads_started += 1
        cut_at = start + (end - start) // 2 if emu.faults.cut_download() else None
        rate = emu.faults.faults.download_bytes_per_second
        chunk = max(1024, int(rate / 20)) if rate else 64 * 1024
        await response.prepare(request)
        try:
            for piece in chunks(start, cut_at if cut_at is not None else end, chunk):
                if rate:
                    await asyncio.sleep(len(piece) / rate)
                await response.write(piece)
                emu.inspect.download_bytes += len(piece)
        except ConnectionError:
            return response
        if cut_at is not None:
            emu.inspect.downloads_cut += 1
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        emu.inspect.note_download()
        return response

    # -- uploaded inputs ---------------------------------------------------------
    async def upload(self, request: web.Request) -> web.StreamResponse:
        """Store a local input (the emulator's key, like the control routes)."""
        key = request.match_info["key"]
        if not valid_key(key):
            raise ApiError(400, "Invalid object key")
        data = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) > MAX_INPUT_VIDEO_BYTES:
                raise ApiError(413, f"Upload larger than {MAX_INPUT_VIDEO_BYTES} bytes")
        if not data:
            raise ApiError(400, "Empty upload")
        content_type = request.headers.get("Content-Type", "application/octet-stream")
        self.emu.uploads.put(key, bytes(data), content_type)
        return web.json_response({"key": key, "size": len(data)}, status=201)

    async def uploaded(self, request: web.Request) -> web.StreamResponse:
        """Serve an uploaded input to anyone, like a CDN (GET and HEAD)."""
        found = self.emu.uploads.get(request.match_info["key"])
        if found is None:
            return _detail(404, "Not found")
        data, content_type = found
        return web.Response(body=data, content_type=content_type)

    # -- control -----------------------------------------------------------------
    async def stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.emu.stats_json())

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            data = await self._body(request)
            expire = data.pop("expire_asset_urls", False)
            self.emu.set_faults(Faults.from_mapping(data))
        except (ApiError, TypeError, ValueError) as exc:
            return _detail(400, str(exc.detail if isinstance(exc, ApiError) else exc))
        if expire:
            self.emu.expire_asset_urls()
        return web.json_response(self.emu.faults.faults.to_json())

    async def reset(self, request: web.Request) -> web.StreamResponse:
        try:
            data = await self._body(request)
        except ApiError as exc:
            return _detail(400, exc.detail)
        self.emu.reset_stats(generations=bool(data.get("generations", False)))
        return web.json_response(self.emu.stats_json())


def build_app(emu: Emulator) -> tuple[web.Application, _Routes]:
    routes = _Routes(emu)
    app = web.Application(middlewares=[routes.log_requests, routes.middleware])
    p = API_PREFIX
    add = app.router.add_route
    add("POST", f"{p}/generations/video", routes.creator("video"), name="api:create:video")
    add("POST", f"{p}/generations", routes.creator("video"), name="api:create:legacy")
    add("POST", f"{p}/generations/image", routes.creator("image"), name="api:create:image")
    add(
        "POST",
        f"{p}/generations/image/reframe",
        routes.creator("reframe_image"),
        name="api:create:reframe_image",
    )
    add(
        "POST",
        f"{p}/generations/video/reframe",
        routes.creator("reframe_video"),
        name="api:create:reframe_video",
    )
    add(
        "POST",
        f"{p}/generations/video/modify",
        routes.creator("modify_video"),
        name="api:create:modify_video",
    )
    add(
        "POST",
        f"{p}/generations/{{id}}/upscale",
        routes.creator("upscale"),
        name="api:create:upscale",
    )
    add("POST", f"{p}/generations/{{id}}/audio", routes.creator("audio"), name="api:create:audio")
    add("GET", f"{p}/generations/concepts/list", routes.concepts, name="api:concepts")
    add(
        "GET",
        f"{p}/generations/camera_motion/list",
        routes.camera_motions,
        name="api:camera_motions",
    )
    add("GET", f"{p}/generations", routes.list, name="api:list")
    add("GET", f"{p}/generations/{{id}}", routes.get, name="api:get")
    add("DELETE", f"{p}/generations/{{id}}", routes.delete, name="api:delete")
    add("GET", f"{p}/credits", routes.credits, name="api:credits")
    add("GET", f"{p}/ping", routes.ping, name="api:ping")
    app.router.add_get("/assets/{id}/{version}/{name}", routes.asset, name="asset")
    app.router.add_put(EMULATOR_UPLOADS_PATH + "{key}", routes.upload, name="control:upload")
    app.router.add_get(EMULATOR_UPLOADS_PATH + "{key}", routes.uploaded, name="input")
    app.router.add_get("/_emulator/stats", routes.stats, name="control:stats")
    app.router.add_post("/_emulator/faults", routes.set_faults, name="control:faults")
    app.router.add_post("/_emulator/reset", routes.reset, name="control:reset")
    return app, routes
