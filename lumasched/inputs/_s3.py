"""Any S3-compatible bucket as an ``UploadTarget``: AWS S3, Cloudflare R2, MinIO,
Google Cloud Storage's S3 interface (``endpoint_url``).

Built on aioboto3 (the ``lumasched[s3]`` extra): botocore's credential chain is
the one the AWS CLI uses -- ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE`` and ``~/.aws``, SSO, instance and container roles -- and it
signs URLs itself, so nothing here signs by hand. Objects are put once under
``PREFIX/SHA256.EXT``; URLs are presigned GETs (``presign_seconds``, 7 days at
most with SigV4) unless the bucket is served publicly at ``public_base``.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import anyio

from lumasched._config import DEFAULT_PRESIGN_SECONDS
from lumasched.errors import ConfigurationError, UploadError

__all__ = ["S3Target", "parse_s3_url"]


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigurationError(f"--upload {url!r}: expected s3://BUCKET[/PREFIX]")
    return parts.netloc, parts.path.strip("/")


class S3Target:
    """The bucket and prefix of ``url`` (``s3://bucket/prefix``); an async context manager."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        public_base: str | None = None,
        presign_seconds: int = DEFAULT_PRESIGN_SECONDS,
        region: str | None = None,
        profile: str | None = None,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.endpoint_url = endpoint_url
        self.public_base = public_base.rstrip("/") if public_base else None
        self.presign_seconds = presign_seconds
        self._region = region
        self._profile = profile
        self._stack = AsyncExitStack()
        self._client: Any = None

    def __repr__(self) -> str:
        return f"S3Target({self.name!r})"

    @property
    def name(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where}@{self.endpoint_url}" if self.endpoint_url else where

    async def __aenter__(self) -> S3Target:
        try:
            import aioboto3
            from botocore.config import Config
        except ImportError as exc:
            raise ConfigurationError(
                "uploading to S3 needs the s3 extra: pip install 'lumasched[s3]'"
            ) from exc
        session = aioboto3.Session(profile_name=self._profile, region_name=self._region)
        # Path-style addressing on a custom endpoint: MinIO and most self-hosted
        # stores have no wildcard DNS for bucket subdomains; R2 and GCS take both.
        s3 = {"addressing_style": "path"} if self.endpoint_url else {}
        config = Config(
            signature_version="s3v4",
            retries={"max_attempts": 5, "mode": "standard"},
            s3=s3,
        )
        self._client = await self._stack.enter_async_context(
            session.client("s3", endpoint_url=self.endpoint_url, config=config)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()
        self._client = None

    def key_for(self, sha256: str, suffix: str) -> str:
        return f"{self.prefix}/{sha256}{suffix}" if self.prefix else f"{sha256}{suffix}"

    def _failed(self, what: str, path: str, exc: Exception) -> UploadError:
        return UploadError(f"{what} {self.name}: {exc}", target=self.name, path=path)

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            await self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._failed("cannot look up", key, exc) from exc
        except BotoCoreError as exc:
            raise self._failed("cannot look up", key, exc) from exc
        return True

    async def put(self, key: str, path: Path, content_type: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        # Streamed from the open file (aiohttp reads it off the event loop), never
        # held in memory whole; one PUT, as every input is within the API's limits.
        body = await anyio.to_thread.run_sync(path.open, "rb")
        try:
            await self._client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._failed("cannot upload to", str(path), exc) from exc
        finally:
            body.close()

    async def url(self, key: str) -> tuple[str, float | None]:
        if self.public_base is not None:
            return f"{self.public_base}/{quote(key)}", None
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            url = await self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=self.presign_seconds,
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._failed("cannot sign a URL for", key, exc) from exc
        return str(url), float(self.presign_seconds)
