"""``Emulator``: the Dream Machine API on a local socket, as an async context manager."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import attrs
from aiohttp import web

from lumasched.api import Family
from lumasched.emulator._app import API_PREFIX, build_app
from lumasched.emulator._assets import AssetSigner
from lumasched.emulator._callbacks import CallbackSender
from lumasched.emulator._config import EmulatorConfig, Faults
from lumasched.emulator._faults import FaultInjector
from lumasched.emulator._inputs import InputReader, UploadStore, uploads_folder
from lumasched.emulator._persist import StateFile
from lumasched.emulator._state import Record, Store
from lumasched.emulator._stats import Inspector

__all__ = ["Emulator"]


class Emulator:
    """An offline Dream Machine API. ::

        async with Emulator(speed=100, api_key="test") as emu:
            client = AsyncLumaAI(auth_token="test", base_url=emu.base_url)
            ...
            assert emu.inspect.rate_limited_total == 0

    Keyword arguments override fields of ``config`` (an ``EmulatorConfig``);
    ``faults`` may be given as a ``Faults`` or a mapping. With
    ``state_path``, generations outlive the emulator: ``start()`` takes back
    what the file holds (``ConfigurationError`` if another emulator has it open).
    """

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any):
        config = config or EmulatorConfig()
        faults = overrides.get("faults")
        if isinstance(faults, Mapping):
            overrides["faults"] = Faults.from_mapping(faults)
        self.config: EmulatorConfig = attrs.evolve(config, **overrides) if overrides else config
        rng = random.Random(self.config.seed)
        self._rng = rng
        self.inspect: Inspector = self._new_inspector()
        """Live counters of what clients did (see ``Inspector``)."""
        self.store = Store(self.config, random.Random(rng.getrandbits(64)), self.inspect)
        state_path = self.config.state_path
        self.uploads = UploadStore(None if state_path is None else uploads_folder(state_path))
        """Local inputs uploaded to the emulator (``PUT /_emulator/uploads/KEY``)."""
        self.inputs = InputReader(self.uploads, fetch=self.config.fetch_inputs)
        self.faults = FaultInjector(
            self.config.faults, random.Random(rng.getrandbits(64)), self.inspect
        )
        self.signer = AssetSigner(rng.getrandbits(256).to_bytes(32, "big"))
        self._state_file: StateFile | None = None
        self._url_issued: dict[tuple[str, int], float] = {}
        """(generation id, version) -> UNIX time its asset URLs were signed."""
        app, routes = build_app(self)
        self._app = app
        self._routes = routes
        self.callbacks = CallbackSender(
            self.config, routes.render, lambda: self.inspect, random.Random(rng.getrandbits(64))
        )
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._state = "new"

    def _new_inspector(self) -> Inspector:
        return Inspector.for_windows({f: self.config.limits[f].per_seconds for f in Family})

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "not started"
        return f"<Emulator {where} ({self._state})>"

    # -- lifecycle ---------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind the socket and serve. An emulator starts once."""
        if self._state != "new":
            raise RuntimeError(f"an emulator cannot be started when {self._state}")
        self._state = "starting"
        config = self.config
        ports = [config.port]
        if config.state_path is not None:
            try:
                last_port = self._restore(config.state_path)
            except BaseException:
                self._state = "closed"
                raise
            if config.port == 0 and last_port:
                ports.insert(0, last_port)
        try:
            sock = self._bind(config.host, ports)
        except OSError:
            self._state = "closed"
            self._close_state_file()
            raise
        self._port = sock.getsockname()[1]
        self.inputs.origin = self.origin
        if self._state_file is not None:
            self._state_file.save_port(self._port)
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=1.0)
        self._runner = runner
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
            await self.callbacks.start()
        except BaseException:
            sock.close()
            await self.close()
            raise
        now = time.monotonic()
        for record in self.store.records.values():
            self.callbacks.schedule(record, after=now)
        self._state = "running"

    def _restore(self, path: Path) -> int | None:
        """Open the state file and take back its generations; the last port."""
        state_file = StateFile(
            path, balance_cents=self.config.credit_balance_cents, secret=self.signer.secret
        )
        self._state_file = state_file
        try:
            saved = state_file.load()
        except BaseException:
            self._close_state_file()
            raise
        self.signer = AssetSigner(saved.secret)
        self.store.state_file = state_file
        self.store.restore(
            saved.records, saved.jobs, time.monotonic(), balance_cents=saved.balance_cents
        )
        return saved.port

    @staticmethod
    def _bind(host: str, ports: list[int]) -> socket.socket:
        """A socket bound to the first of ``ports`` that is free."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for i, port in enumerate(ports):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
            except OSError:
                sock.close()
                if i + 1 == len(ports):
                    raise
                continue
            return sock
        raise AssertionError("no port to bind")

    def _close_state_file(self) -> None:
        if self._state_file is not None:
            self._state_file.close()
            self._state_file = None

    async def close(self) -> None:
        """Stop serving, cancel pending callbacks. Safe to call twice."""
        if self._state == "closed":
            return
        self._state = "closed"
        try:
            await self.callbacks.close()
            await self.inputs.close()
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
        finally:
            self._close_state_file()

    # -- addresses ---------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator is not started")
        return self._port

    @property
    def origin(self) -> str:
        """``http://HOST:PORT`` (or ``config.public_url``): where assets live."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        host = self.config.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/dream-machine/v1``: give it to a client as its base URL."""
        return self.origin + API_PREFIX

    @property
    def stats_url(self) -> str:
        return self.origin + "/_emulator/stats"

    def asset_url(self, record: Record, name: str) -> str:
        """The signed URL of one of ``record``'s files, stable like a CDN's: the same
        on every read until, with ``asset_url_ttl``, half its lifetime has passed
        (then the next read hands out a fresh one); always fresh after
        ``expire_asset_urls``. Without a TTL it is derived from the generation
        alone, so it survives a restart on a state file."""
        key = (record.id, record.version)
        ttl = self.config.asset_url_ttl
        now = time.time()
        issued = self._url_issued.get(key, record.created_wall if ttl is None else now)
        cutoff = self.faults.faults.expire_urls_issued_before
        if (ttl is not None and now >= issued + ttl / 2) or (
            cutoff is not None and issued < cutoff
        ):
            issued = now
        self._url_issued[key] = issued
        path = f"/assets/{record.id}/{record.version}/{name}"
        return f"{self.origin}{path}?{self.signer.query(path, issued, ttl)}"

    # -- steering and inspection ---------------------------------------------------
    @property
    def credit_balance_cents(self) -> float:
        self.store.settle(time.monotonic())
        return self.store.balance_cents

    def set_faults(self, faults: Faults | None = None, **fields: Any) -> Faults:
        """Replace the fault settings: a ``Faults``, or its fields as keywords
        (``set_faults()`` turns every fault off)."""
        new = faults if faults is not None else Faults.from_mapping(fields)
        self.faults.faults = new
        return new

    def expire_asset_urls(self) -> None:
        """Make every asset URL handed out so far answer 403 "expired";
        URLs handed out later work."""
        self.faults.faults = attrs.evolve(
            self.faults.faults, expire_urls_issued_before=time.time() + 0.001
        )
        time.sleep(0.002)

    def reset_stats(self, *, generations: bool = False) -> None:
        """Zero every counter in ``inspect`` (in place). With ``generations``,
        also forget every generation, free every slot and restore the balance."""
        if generations:
            self.store = Store(
                self.config,
                random.Random(self._rng.getrandbits(64)),
                self.inspect,
                state_file=self._state_file,
            )
            if self._state_file is not None:
                self._state_file.clear(self.config.credit_balance_cents)
        fresh = self._new_inspector()
        for field in attrs.fields(Inspector):
            setattr(self.inspect, field.name, getattr(fresh, field.name))
        self.store.settle(time.monotonic())
        for family, stats in self.inspect.families.items():
            stats.peak_concurrency = self.store.in_flight[family]

    def generation_json(self, gen_id: str) -> dict[str, Any] | None:
        """What ``GET /generations/{id}`` would answer now (None when unknown)."""
        now = time.monotonic()
        self.store.settle(now)
        record = self.store.get(gen_id)
        return None if record is None else self._routes.render(record, now)

    def stats_json(self) -> dict[str, Any]:
        """What ``GET /_emulator/stats`` answers."""
        self.store.settle(time.monotonic())
        return {
            **self.inspect.to_json(),
            "credit_balance_cents": self.store.balance_cents,
            "generations": sum(1 for r in self.store.records.values() if not r.deleted),
            "pending_callbacks": self.callbacks.pending,
            "faults": self.faults.faults.to_json(),
        }
