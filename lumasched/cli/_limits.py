"""``lumasched limits``: the live state of limits shared through Redis.

Shows, per account and family, the slots held and by which worker (with the
generation each stands for, orphans included), grants in the current window,
waiters, the 429 pause and back-off factor, any hold after lost state, and the
counters. Reads only; ``--init`` creates an account's empty state ahead of time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

import attrs
import redis.asyncio as aioredis

from lumasched._config import ENV_API_KEY, ENV_REDIS_URL, Settings
from lumasched.api import Family
from lumasched.errors import ConfigurationError
from lumasched.limits._redis_util import connect
from lumasched.limits.redis import (
    DEFAULT_NAMESPACE,
    REDIS_DOWN,
    FamilyState,
    account_id,
    bootstrap_state,
    inspect_state,
    list_accounts,
)

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "lumasched limits") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Show the live state of an API key's limits shared through Redis: "
        "slots held and by whom, window use, waiters, penalties.",
    )
    parser.add_argument("--redis", metavar="URL", help=f"Redis URL (default: ${ENV_REDIS_URL})")
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        default=ENV_API_KEY,
        help="environment variable holding the API key whose account to show "
        "(default: %(default)s); without a key every account found is shown",
    )
    parser.add_argument("--all", action="store_true", help="show every account found")
    parser.add_argument(
        "--namespace", default=DEFAULT_NAMESPACE, help="key prefix (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C"
    )
    parser.add_argument(
        "--metrics-port",
        metavar="PORT",
        type=int,
        help="serve the same state as Prometheus metrics at http://127.0.0.1:PORT/metrics, "
        "read from Redis at each scrape, until Ctrl-C (needs lumasched[prometheus])",
    )
    parser.add_argument(
        "--init",
        action="store_true",
        help="create this account's empty limiter state ahead of the first worker",
    )
    return parser


def _state_json(state: FamilyState) -> dict[str, Any]:
    data = attrs.asdict(state, recurse=True)
    data["family"] = state.family.value
    data["held"] = state.held
    return data


def _format(account: str, states: Sequence[FamilyState]) -> list[str]:
    lines = [f"account {account}"]
    for state in states:
        cap = "?" if state.concurrency_limit is None else str(state.concurrency_limit)
        rate = "?" if state.requests is None else str(state.requests)
        window = "?" if state.window is None else f"{state.window:g}s"
        lines.append(
            f"  {state.family.value}: {state.held}/{cap} slots held, "
            f"{state.window_used}/{rate} creates in the last {window}, "
            f"{state.waiting} waiting"
        )
        notes = []
        if state.factor < 1:
            notes.append(f"backed off to x{state.factor:.2f} of the limits after 429s")
        if state.penalty_remaining > 0:
            notes.append(f"429 pause {state.penalty_remaining:.1f}s left")
        if state.hold_remaining > 0:
            notes.append(f"new grants held {state.hold_remaining:.1f}s (lost state or outage)")
        for note in notes:
            lines.append(f"    ! {note}")
        for lease in state.leases:
            if lease.orphaned_for is not None:
                status = f"orphaned {lease.orphaned_for:.1f}s ago (owner gone), awaiting adoption"
            else:
                status = f"expires in {lease.expires_in or 0:.1f}s"
            gen = lease.generation_id or "(not submitted)"
            lines.append(f"    {lease.lease_id[:12]:<12}  {lease.owner:<28}  {gen:<36}  {status}")
        if state.counters:
            counters = ", ".join(
                f"{k.removesuffix('_count')} {v}" for k, v in state.counters.items()
            )
            lines.append(f"    counters: {counters}")
    return lines


async def _show(client: aioredis.Redis, namespace: str, accounts: list[str], as_json: bool) -> None:
    result: dict[str, list[FamilyState]] = {}
    for account in accounts:
        result[account] = [
            await inspect_state(client, namespace, account, family) for family in Family
        ]
    if as_json:
        print(
            json.dumps(
                {acct: [_state_json(s) for s in states] for acct, states in result.items()},
                indent=2,
            ),
            flush=True,
        )
        return
    if not result:
        print(f"no limiter state under namespace {namespace!r}", flush=True)
    for account, states in result.items():
        print("\n".join(_format(account, states)), flush=True)


async def _serve_metrics(args: argparse.Namespace, url: str, api_key: str | None) -> int:
    from lumasched.observe import SharedLimitsMetrics
    from lumasched.observe.prometheus import MetricsServer

    accounts = [account_id(api_key)] if api_key is not None and not args.all else None
    async with SharedLimitsMetrics(url, namespace=args.namespace, accounts=accounts) as shared:
        try:
            async with MetricsServer([shared], port=args.metrics_port) as server:
                print(f"serving {server.url} (Ctrl-C to stop)", flush=True)
                await asyncio.Event().wait()
        except OSError as exc:  # only the listen can fail: the body just waits
            print(f"lumasched limits: --metrics-port {args.metrics_port}: {exc}", file=sys.stderr)
            return 2
    return 0  # pragma: no cover - only Ctrl-C ends it


async def _run(args: argparse.Namespace, url: str, api_key: str | None) -> int:
    if args.metrics_port is not None:
        return await _serve_metrics(args, url, api_key)
    client, _ = connect(url)
    try:
        if args.init:
            if api_key is None:
                print("lumasched limits: --init needs the API key", file=sys.stderr)
                return 2
            fresh = await bootstrap_state(client, args.namespace, account_id(api_key))
            print("state created" if fresh else "state already exists: left alone")
            return 0
        while True:
            if api_key is not None and not args.all:
                accounts = [account_id(api_key)]
            else:
                accounts = await list_accounts(client, args.namespace)
            await _show(client, args.namespace, accounts, args.json)
            if not args.watch:
                return 0
            await asyncio.sleep(args.watch)
            print(flush=True)
    except REDIS_DOWN as exc:
        print(f"lumasched limits: cannot reach Redis: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    settings = Settings.from_env(redis_url=args.redis, api_key_env=args.api_key_env)
    if settings.redis_url is None:
        print(f"lumasched limits: give --redis URL or set {ENV_REDIS_URL}", file=sys.stderr)
        return 2
    if args.metrics_port is not None:
        from lumasched.cli._observe import check_metrics_available

        try:
            check_metrics_available(args.metrics_port)
        except ConfigurationError as exc:
            print(f"lumasched limits: {exc}", file=sys.stderr)
            return 2
    try:
        return asyncio.run(_run(args, settings.redis_url, settings.api_key))
    except KeyboardInterrupt:
        return 130
