"""``lumasched emulator``: serve the emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from lumasched.emulator import DEFAULT_BLACKLIST, FAILURE_REASONS, Emulator, EmulatorConfig, Faults
from lumasched.errors import ConfigurationError
from lumasched.limits import Limits
from lumasched.pricing import PriceTable

__all__ = ["build_parser", "config_from_args", "main"]


def build_parser(prog: str = "lumasched emulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve an offline Dream Machine API at http://HOST:PORT/dream-machine/v1 "
        "(the base URL is printed as the first line on stdout).",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to bind (default %(default)s)")
    add("--port", type=int, default=8000, help="port, 0 for any free one (default %(default)s)")
    add(
        "--api-key",
        metavar="KEY",
        help="pin the key: only 'Authorization: Bearer KEY' is accepted, and the /_emulator/* "
        "control routes need it too (default: any key; a missing or malformed "
        "Authorization header is always 401)",
    )
    add(
        "--limits",
        metavar="FILE",
        help="account limits, the TOML file `lumasched run --limits` reads; creates over "
        "them get 429 (default: the Build tier)",
    )
    add(
        "--speed",
        type=float,
        default=1.0,
        metavar="X",
        help="divide every modelled latency by X: 100 turns 30 s into 0.3 s (default %(default)s)",
    )
    add(
        "--fetch-inputs",
        action="store_true",
        help="read every input URL at create, as the real service does: one it cannot "
        "read fails the generation 'Failed to read user input frames' (default: only "
        "the emulator's own upload URLs are checked)",
    )
    add(
        "--fixed-latency",
        type=float,
        metavar="SECONDS",
        help="every job takes exactly this long (not scaled by --speed)",
    )
    add(
        "--jitter",
        type=float,
        default=0.2,
        metavar="F",
        help="each latency is scaled by a random factor in [1-F, 1+F] (default %(default)s)",
    )
    add(
        "--failure-rate",
        type=float,
        default=0.0,
        metavar="P",
        help='fraction of jobs that end failed with "Job failed" (default %(default)s)',
    )
    add(
        "--fail",
        action="append",
        default=[],
        metavar="REASON=P",
        help="fraction of jobs that end failed with a documented reason; REASON is one of "
        f"{', '.join(FAILURE_REASONS)} (repeatable). A prompt containing 'fail:REASON' "
        "always fails with it",
    )
    add(
        "--callback-duplicates",
        type=float,
        default=0.0,
        metavar="P",
        help="send this fraction of callbacks twice (default 0)",
    )
    add(
        "--callback-reorder",
        type=float,
        default=0.0,
        metavar="P",
        help="for this fraction of generations, send the final state's callback before "
        "a stale 'dreaming' one (default 0)",
    )
    add(
        "--callback-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="hold each callback back by a random 0..SECONDS (default 0)",
    )
    add("--seed", type=int, metavar="N", help="seed for every random choice (ids, jitter, faults)")
    add(
        "--credits",
        type=float,
        default=500_000.0,
        metavar="CENTS",
        help="starting credit balance in USD cents; a create it cannot cover gets 402 "
        "(default %(default)s)",
    )
    add(
        "--monthly-usage-cap",
        type=float,
        metavar="CENTS",
        help="refuse (402) creates past this much usage per calendar month, in USD cents; "
        "the Build tier's cap is 500000 (default: no cap)",
    )
    add("--prices", metavar="FILE", help="price table override (.toml or .json)")
    add(
        "--blacklist",
        metavar="WORDS",
        help=f"comma-separated moderation words (default {','.join(DEFAULT_BLACKLIST)})",
    )
    add(
        "--video-padding",
        type=int,
        default=0,
        metavar="BYTES",
        help="bytes appended to every video file, to emulate big assets (default 0)",
    )
    add(
        "--image-scale",
        type=float,
        default=0.125,
        metavar="F",
        help="image size as a fraction of the docs' reframe sizes (default 1/8)",
    )
    add(
        "--asset-url-ttl",
        type=float,
        metavar="SECONDS",
        help="asset URLs answer 403 this long after they are signed; a GET after half "
        "of it hands out a fresh one (default: stable URLs that never expire)",
    )
    add(
        "--same-id-derived",
        action="store_true",
        help="upscale/audio restart the source generation instead of creating a new one",
    )
    add(
        "--public-url",
        metavar="URL",
        help="origin written into asset URLs (default http://HOST:PORT)",
    )
    add(
        "--state",
        metavar="FILE",
        help="keep generations, deletions and credits in this SQLite file across restarts "
        "(default: memory only)",
    )
    add(
        "--fault-5xx",
        type=float,
        default=0.0,
        metavar="P",
        help="answer this fraction of requests on every route with 500, doing nothing",
    )
    add(
        "--fault-429",
        type=float,
        default=0.0,
        metavar="P",
        help="answer this fraction of requests on every route with 429, doing nothing",
    )
    add(
        "--fault-drop-create",
        type=float,
        default=0.0,
        metavar="P",
        help="accept (and bill) this fraction of creates, then drop the connection unanswered",
    )
    add(
        "--fault-cut-download",
        type=float,
        default=0.0,
        metavar="P",
        help="cut this fraction of asset downloads half way",
    )
    add(
        "--fault-slow-download",
        type=float,
        metavar="BYTES_PER_S",
        help="throttle asset downloads to this rate",
    )
    add("-v", "--verbose", action="store_true", help="log every request on stderr")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    limits = Limits.from_toml(args.limits) if args.limits else Limits()
    prices = PriceTable.from_file(args.prices) if args.prices else PriceTable()
    blacklist = (
        tuple(w.strip() for w in args.blacklist.split(",") if w.strip())
        if args.blacklist is not None
        else DEFAULT_BLACKLIST
    )
    try:
        rates = {}
        for item in args.fail:
            reason, sep, rate = item.partition("=")
            if not sep:
                raise ValueError(f"--fail {item!r}: expected REASON=P")
            rates[reason.strip()] = float(rate)
        faults = Faults(
            server_errors=args.fault_5xx,
            rate_limits=args.fault_429,
            drop_after_create=args.fault_drop_create,
            cut_downloads=args.fault_cut_download,
            download_bytes_per_second=args.fault_slow_download,
        )
        return EmulatorConfig(
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            limits=limits,
            speed=args.speed,
            fixed_latency=args.fixed_latency,
            jitter=args.jitter,
            failure_rate=args.failure_rate,
            failure_rates=rates,
            callback_duplicates=args.callback_duplicates,
            callback_reorder=args.callback_reorder,
            callback_delay=args.callback_delay,
            blacklist=blacklist,
            seed=args.seed,
            credit_balance_cents=args.credits,
            monthly_usage_cap_cents=args.monthly_usage_cap,
            prices=prices,
            image_scale=args.image_scale,
            video_padding_bytes=args.video_padding,
            asset_url_ttl=args.asset_url_ttl,
            faults=faults,
            derived_new_id=not args.same_id_derived,
            public_url=args.public_url,
            state_path=args.state,
            fetch_inputs=args.fetch_inputs,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(str(exc)) from exc


async def _serve(config: EmulatorConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Emulator(config) as emu:
            print(emu.base_url, flush=True)
            print(f"stats: {emu.stats_url}", file=sys.stderr, flush=True)
            if config.state_path is not None:
                kept = sum(1 for r in emu.store.records.values() if not r.deleted)
                print(
                    f"state: {config.state_path} ({kept} generations kept)",
                    file=sys.stderr,
                    flush=True,
                )
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lumasched emulator`` with ``argv`` (the arguments after ``emulator``)."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        config = config_from_args(args)
    except ConfigurationError as exc:
        print(f"lumasched emulator: {exc}", file=sys.stderr)
        return 2
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        asyncio.run(_serve(config))
    except ConfigurationError as exc:
        print(f"lumasched emulator: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"lumasched emulator: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:  # pragma: no cover - signal arrived before the handler
        pass
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0
