"""Named defaults, and the one place that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs

DEFAULT_BASE_URL = "https://api.lumalabs.ai/dream-machine/v1"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_USER_AGENT_PRODUCT = "lumasched"

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
