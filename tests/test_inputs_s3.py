"""Uploads to a real S3-compatible server (moto's server mode, real sockets):
each file stored once across items, runs and hosts; presigned URLs the emulator
fetches; expired URLs re-signed; ``lumasched run --upload`` end to end."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import aiohttp
import pytest

from lumasched import cli
from lumasched.api import ImageKeyframe, Keyframes, ModifyVideoRequest, VideoRequest
from lumasched.emulator import Emulator
from lumasched.errors import GenerationFailed
from lumasched.inputs import S3Target, UploadLog, Uploads
from tests import _cli_fixtures as fx
from tests import _s3_fixtures as s3_fx
from tests._cli_fixtures import ThreadedEmulator, emulator_config, read_results, write_jsonl
from tests._inputs_fixtures import clip, run_one, still
from tests._s3_fixtures import BUCKET, S3Server

limits_file = fx.limits_file
emulator = fx.emulator
cli_env = fx.cli_env
s3_server = s3_fx.s3_server
s3 = s3_fx.s3

pytestmark = pytest.mark.slow


def _request(path: Path, prompt: str = "the harbour wakes up") -> VideoRequest:
    return VideoRequest(prompt, keyframes=Keyframes(ImageKeyframe(path)))


def _target(server: S3Server, **kwargs: object) -> S3Target:
    return S3Target(f"s3://{BUCKET}/inputs", endpoint_url=server.endpoint, **kwargs)  # type: ignore[arg-type]


async def test_each_file_is_uploaded_once_across_items_runs_and_hosts(
    tmp_path: Path, s3: S3Server
) -> None:
    """Two items on one still upload it once; a rerun on the same log uploads and
    looks up nothing; another host (a fresh log) finds it in the bucket."""
    a, b = still(tmp_path / "a.jpg"), still(tmp_path / "b.png", (0, 90, 200), "PNG")
    requests = [_request(a), _request(a, "the harbour at night"), _request(b)]
    log = UploadLog(tmp_path / "uploads.sqlite")
    async with _target(s3) as target:
        uploads = Uploads(target, log)
        resolved = [await uploads.resolve(r) for r in requests]
        assert (uploads.stats.uploaded, uploads.stats.found) == (2, 0)
        keys = s3.object_keys()
        assert len(keys) == 2 and all(k.startswith("inputs/") for k in keys)
        assert {k.rsplit(".", 1)[1] for k in keys} == {"jpg", "png"}
        urls = [r.keyframes.frame0.url for r in resolved]  # type: ignore[union-attr]
        assert urls[0] == urls[1] != urls[2]
        async with aiohttp.ClientSession() as http, http.get(urls[0]) as response:
            assert response.status == 200
            assert await response.read() == a.read_bytes()
        again = Uploads(target, log)
        assert [await again.resolve(r) for r in requests] == resolved
        assert (again.stats.uploaded, again.stats.found) == (0, 0)
        other_log = UploadLog(":memory:")
        elsewhere = Uploads(target, other_log)
        await elsewhere.prepare([await elsewhere.checked(p, "image") for p in (a, b)])
        assert (elsewhere.stats.uploaded, elsewhere.stats.found) == (0, 2)
        other_log.close()
    log.close()
    assert s3.object_keys() == keys


async def test_an_expiring_presigned_url_is_resigned_before_a_create(
    tmp_path: Path, s3: S3Server
) -> None:
    """Within the margin of its expiry, the URL is signed again (and still works)."""
    path = still(tmp_path / "a.jpg")
    now = [time.time()]
    log = UploadLog(tmp_path / "uploads.sqlite")
    async with _target(s3, presign_seconds=3600) as target:
        uploads = Uploads(target, log, resign_margin=600, clock=lambda: now[0])
        first = (await uploads.resolve(_request(path))).keyframes.frame0.url  # type: ignore[union-attr]
        now[0] += 3100  # under 10 minutes left: within the margin
        second = (await uploads.resolve(_request(path))).keyframes.frame0.url  # type: ignore[union-attr]
        assert uploads.stats.resigned == 1 and uploads.stats.uploaded == 1
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        record = log.get(target.name, sha)
        assert record is not None and record.url == second
        assert record.expires_at == pytest.approx(now[0] + 3600)
        assert first.split("?")[0] == second.split("?")[0]
        async with aiohttp.ClientSession() as http, http.get(second) as response:
            assert response.status == 200
    log.close()


async def test_the_emulator_fetches_presigned_urls_and_fails_an_unreadable_one(
    tmp_path: Path, s3: S3Server
) -> None:
    """The presigned URL is fetched at create and the video completes; once the
    object is gone, the generation fails "Failed to read user input frames"."""
    path = still(tmp_path / "a.jpg")
    log = UploadLog(tmp_path / "uploads.sqlite")
    async with (
        _target(s3) as target,
        Emulator(api_key="lm-key", speed=2000, fetch_inputs=True) as emu,
    ):
        uploads = Uploads(target, log)
        result, error = await run_one(emu, _request(path), uploads)
        assert error is None and result is not None
        assert result.generation.state == "completed"
        sent = (result.generation.request or {})["keyframes"]["frame0"]["url"]
        assert sent.startswith(s3.endpoint) and "Signature" in sent
        (key,) = s3.object_keys()
        s3.client().delete_object(Bucket=BUCKET, Key=key)
        _, error = await run_one(emu, _request(path, "the harbour at dusk"), uploads)
        assert isinstance(error, GenerationFailed)
        assert error.failure_reason == "Failed to read user input frames"
    log.close()


def test_cli_upload_runs_a_batch_of_stills_and_a_rerun_uploads_nothing(
    tmp_path: Path,
    s3: S3Server,
    limits_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--upload`` stores each still once, the API (emulator) fetches them, every
    item completes; --dry-run then lists them as there, and a rerun uploads none."""
    for name, color in (("a", (200, 0, 0)), ("b", (0, 200, 0))):
        still(tmp_path / "stills" / f"{name}.jpg", color)
    items = [
        {
            "id": f"shot-{i}",
            "model": "ray-flash-2",
            "prompt": f"shot {i} comes alive",
            "keyframes": {"frame0": {"path": f"stills/{'ab'[i % 2]}.jpg"}},
        }
        for i in range(4)
    ]
    manifest = write_jsonl(tmp_path / "shots.jsonl", items)
    emulator = ThreadedEmulator(emulator_config(fetch_inputs=True))
    try:
        monkeypatch.setenv("LUMAAI_API_KEY", fx.API_KEY)
        monkeypatch.setenv("LUMAAI_BASE_URL", emulator.base_url)
        out = tmp_path / "out"
        base = ["run", str(manifest), "--out", str(out), "--limits", str(limits_file)]
        upload = ["--upload", f"s3://{BUCKET}/batch", "--upload-endpoint", s3.endpoint]
        assert cli.main([*base, *upload, "--dry-run"]) == cli.EXIT_OK
        assert "local inputs: 2 files (" in capsys.readouterr().out
        assert cli.main([*base, *upload, "--no-progress"]) == cli.EXIT_OK
        printed = capsys.readouterr()
        assert "uploaded 2 files" in printed.out + printed.err
        results = read_results(out)
        assert {r["state"] for r in results.values()} == {"completed"}
        assert len(s3.object_keys()) == 2
        assert cli.main([*base, *upload, "--dry-run"]) == cli.EXIT_OK
        assert "0 files (0.0 kB) to upload" in capsys.readouterr().out
        (out / "results.jsonl").unlink()
        assert cli.main([*base, *upload, "--no-progress", "--retry-failed"]) == cli.EXIT_OK
        printed = capsys.readouterr()
        assert "uploaded 0 files (0.0 kB)" in printed.out + printed.err
    finally:
        emulator.close()


def test_cli_upload_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --upload URL, or an endpoint without --upload: exit 2."""
    still(tmp_path / "a.jpg")
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [{"model": "ray-2", "prompt": "a still", "keyframes": {"frame0": {"path": "a.jpg"}}}],
    )
    base = ["run", str(manifest), "--out", str(tmp_path / "out"), "--dry-run"]
    assert cli.main([*base, "--upload", "https://bucket/x"]) == cli.EXIT_USAGE
    assert "expected s3://BUCKET[/PREFIX]" in capsys.readouterr().err
    assert cli.main([*base, "--upload-endpoint", "http://x"]) == cli.EXIT_USAGE
    assert "need --upload" in capsys.readouterr().err


def test_cli_a_failed_upload_stops_the_run_before_any_create(
    tmp_path: Path,
    s3: S3Server,
    cli_env: ThreadedEmulator,
    limits_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No such bucket: one clear error, exit 1, no generation created."""
    still(tmp_path / "a.jpg")
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [{"model": "ray-2", "prompt": "a still", "keyframes": {"frame0": {"path": "a.jpg"}}}],
    )
    status = cli.main(
        [
            "run",
            str(manifest),
            "--out",
            str(tmp_path / "out"),
            "--limits",
            str(limits_file),
            "--no-progress",
            "--upload",
            "s3://no-such-bucket/x",
            "--upload-endpoint",
            s3.endpoint,
        ]
    )
    assert status == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "cannot" in err and "s3://no-such-bucket/x" in err and "NoSuchBucket" in err
    assert cli_env.emu.store.records == {}


async def test_a_large_clip_is_streamed_up_whole(tmp_path: Path, s3: S3Server) -> None:
    """A 9 MB clip goes up streamed from the file (no event-loop-blocking body), intact."""
    path = clip(tmp_path / "take.mp4", size=9 * 1024 * 1024)
    request = ModifyVideoRequest(path, mode="flex_1")
    with UploadLog(":memory:") as log:
        async with _target(s3) as target:
            resolved = await Uploads(target, log).resolve(request)
            assert isinstance(resolved, ModifyVideoRequest)
            async with aiohttp.ClientSession() as http, http.get(resolved.media.url) as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "video/mp4"
                data = await response.read()
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    (key,) = s3.object_keys()
    assert key.endswith(".mp4")


def test_cli_emulator_with_upload_rehearses_the_bucket(
    tmp_path: Path,
    s3: S3Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--emulator with --upload stores the still in the bucket, and the run completes."""
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    still(tmp_path / "a.jpg")
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {
                "id": "a",
                "model": "ray-2",
                "prompt": "a still",
                "keyframes": {"frame0": {"path": "a.jpg"}},
            }
        ],
    )
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--emulator", "--emulator-speed", "2000"]
    upload = ["--upload", f"s3://{BUCKET}/rehearsal", "--upload-endpoint", s3.endpoint]
    assert cli.main([*args, *upload, "--dry-run"]) == cli.EXIT_OK
    assert f"to upload to s3://{BUCKET}/rehearsal" in capsys.readouterr().out
    assert cli.main([*args, *upload, "--no-progress"]) == cli.EXIT_OK
    assert read_results(out)["a"]["state"] == "completed"
    (key,) = s3.object_keys()
    assert key.startswith("rehearsal/") and key.endswith(".jpg")
