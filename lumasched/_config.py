"""Named defaults, and the one place that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs

DEFAULT_BASE_URL = "https://api.lumalabs.ai/dream-machine/v1"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_REQUEST_DEADLINE = 90.0
"""Seconds one API request may take in all, however its bytes trickle in (a sync
image create gets its ``sync_timeout`` on top)."""
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""The largest API answer read (a generation is a few KiB; a page of 100 under 1 MiB)."""
DEFAULT_JOB_TIMEOUT = 3600.0
"""Seconds a generation may stay unfinished before its job fails (a rerun polls it again)."""
DEFAULT_MAX_ASSET_SIZE = 4 * 1024**3
"""The largest asset downloaded (a 4K, 10 s video is well under 1 GiB)."""
DEFAULT_UNREACHABLE_GIVE_UP = 120.0
"""Seconds the API may stay unreachable before a run stops creating."""
DEFAULT_USER_AGENT_PRODUCT = "lumasched"
DEFAULT_DASHBOARD_PORT = 8765
"""Where ``--dashboard`` serves the live page (on 127.0.0.1) when no port is given."""
# Local input files (lumasched.inputs). The API documents no limits; these are
# what its hosted inputs look like in practice, and what it can fetch quickly.
MAX_INPUT_IMAGE_BYTES = 10 * 1024**2
MAX_INPUT_IMAGE_PIXELS = 8192 * 8192
MAX_INPUT_VIDEO_BYTES = 100 * 1024**2
# Presigned GET URLs: SigV4's own maximum (7 days), so they outlive a long queue,
# and re-signed before a create when less than the margin is left.
DEFAULT_PRESIGN_SECONDS = 7 * 24 * 3600
DEFAULT_RESIGN_MARGIN = 6 * 3600.0

ENV_API_KEY = "LUMAAI_API_KEY"
ENV_BASE_URL = "LUMAAI_BASE_URL"
ENV_REDIS_URL = "LUMASCHED_REDIS_URL"

API_KEY_HELP = (
    f"set {ENV_API_KEY} to a key from https://lumalabs.ai/dream-machine/api/keys, "
    "or try lumasched offline on its built-in emulator with --emulator"
)


def _hide(value: str | None) -> str:
    return "None" if value is None else "'***'"


@attrs.frozen
class Settings:
    """Connection settings. ``repr`` never shows the API key."""

    api_key: str | None = attrs.field(default=None, repr=_hide)
    base_url: str = DEFAULT_BASE_URL
    redis_url: str | None = attrs.field(default=None, repr=_hide)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    request_deadline: float = DEFAULT_REQUEST_DEADLINE
    """Seconds one API request may take in all (connect, send, the whole answer)."""
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    """API answers larger than this fail (``ResponseTooLargeError``) instead of being read."""
    job_timeout: float | None = DEFAULT_JOB_TIMEOUT
    """Seconds a generation may take to reach a terminal state (``None``: no limit)."""
    max_asset_size: int = DEFAULT_MAX_ASSET_SIZE
    """Downloads larger than this many bytes are refused (``AssetTooLargeError``)."""

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        redis_url: str | None = None,
        api_key_env: str = ENV_API_KEY,
    ) -> Settings:
        """Explicit arguments win over the environment, which wins over defaults.

        ``api_key_env`` names the variable that holds the key (``LUMAAI_API_KEY``).
        """
        env = os.environ if environ is None else environ
        return cls(
            api_key=api_key or env.get(api_key_env) or None,
            base_url=(base_url or env.get(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/"),
            redis_url=redis_url or env.get(ENV_REDIS_URL) or None,
        )
