"""The commands on the account's generations: get, list, delete, download,
concepts, camera-motions, credits."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from lumasched.cli._console import err, out, table, with_client
from lumasched.cli._exits import EXIT_FAILED, EXIT_OK
from lumasched.errors import NotFoundError


def cmd_get(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        generation = await client.get(args.id)
        out(json.dumps(generation.to_json(), indent=2, ensure_ascii=False, default=str))
        return EXIT_OK

    return with_client(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        page = await client.list(limit=args.limit, offset=args.offset)
        if args.json:
            for generation in page.generations:
                out(json.dumps(generation.to_json(), ensure_ascii=False, default=str))
            return EXIT_OK
        rows = [
            (
                g.id,
                str(g.state),
                str(g.generation_type or ""),
                str(g.model or ""),
                g.created_at.isoformat(timespec="seconds") if g.created_at else "",
                g.failure_reason or "",
            )
            for g in page.generations
        ]
        table(("ID", "STATE", "TYPE", "MODEL", "CREATED", "FAILURE"), rows)
        if page.has_more:
            out(f"(more: --offset {args.offset + len(rows)})")
        return EXIT_OK

    return with_client(args, body)


def cmd_delete(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        status = EXIT_OK
        for generation_id in args.ids:
            try:
                await client.delete(generation_id)
            except NotFoundError:
                err(f"{generation_id}: no such generation")
                status = EXIT_FAILED
            else:
                out(f"deleted {generation_id}")
        return status

    return with_client(args, body)


def cmd_download(args: argparse.Namespace) -> int:
    from lumasched.engine.downloads import download_asset

    into_dir = args.out.is_dir() or str(args.out).endswith(os.sep)

    async def body(client: Any) -> int:
        generation = await client.get(args.id)
        url = generation.asset_url
        if url is None:
            state = generation.state
            reason = f": {generation.failure_reason}" if generation.failure_reason else ""
            err(f"{args.id} has no asset to download (state {state}{reason})")
            return EXIT_FAILED
        target: Path = args.out
        if into_dir:
            target = target / f"{generation.id}{_extension(url, generation)}"

        async def refresh() -> str:
            fresh = await client.get(args.id)
            return str(fresh.asset_url)

        result = await download_asset(client, url, target, refresh_url=refresh)
        out(f"{result.path}  {result.bytes} bytes  sha256 {result.sha256}")
        return EXIT_OK

    return with_client(args, body)


def _extension(url: str, generation: Any) -> str:
    from urllib.parse import urlsplit

    suffix = Path(urlsplit(url).path).suffix.lower()
    if suffix in (".mp4", ".jpg", ".jpeg", ".png", ".webp", ".mov"):
        return suffix
    assets = generation.assets
    return ".mp4" if assets is not None and assets.video else ".jpg"


def cmd_concepts(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        for key in await client.concepts():
            out(str(key))
        return EXIT_OK

    return with_client(args, body)


def cmd_camera_motions(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        for motion in await client.camera_motions():
            out(str(motion))
        return EXIT_OK

    return with_client(args, body)


def cmd_credits(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        credits = await client.credits()
        cents = float(credits.credit_balance)
        out(f"credit balance: {cents:g} cents (${cents / 100:,.2f})")
        return EXIT_OK

    return with_client(args, body)
