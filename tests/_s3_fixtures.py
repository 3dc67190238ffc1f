"""A real S3-compatible server for the upload tests: moto's server mode on a free
port of this machine, over real sockets, with throwaway credentials in the
standard AWS environment variables (what botocore's credential chain reads)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

BUCKET = "lumasched-inputs"


class S3Server:
    """moto's ThreadedMotoServer; ``requests(method)`` counts what it was sent."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        # Port 0: the kernel picks a port and the server holds it from the start (a
        # port picked beforehand could be taken by a test running in parallel).
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def object_keys(self, bucket: str = BUCKET) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=bucket)
        return sorted(obj["Key"] for obj in listed.get("Contents", []))

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """An empty bucket, and the AWS environment a user would have set."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    client = s3_server.client()
    if BUCKET in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        for key in s3_server.object_keys():
            client.delete_object(Bucket=BUCKET, Key=key)
    else:
        client.create_bucket(Bucket=BUCKET)
    return s3_server
