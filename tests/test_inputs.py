"""Local files as inputs: requests name them, manifests check them (FILE:LINE),
the emulator stores and reads them, and nothing is sent for a bad one."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from lumasched import cli
from lumasched.api import (
    CharacterRef,
    ImageKeyframe,
    ImageRef,
    ImageRequest,
    Keyframes,
    Media,
    ModifyVideoRequest,
    VideoRequest,
)
from lumasched.emulator import Emulator
from lumasched.errors import GenerationFailed, UploadError, ValidationError
from lumasched.inputs import (
    EMULATOR_UPLOADS_PATH,
    EmulatorTarget,
    InputProblem,
    UploadLog,
    Uploads,
    _checks,
    check_input,
    is_local,
    local_url,
    media_slots,
    replace_media_urls,
)
from lumasched.manifest import Manifest, ManifestError
from tests import _cli_fixtures as fx
from tests._cli_fixtures import ThreadedEmulator, write_jsonl
from tests._inputs_fixtures import WEBM_HEAD, clip, run_one, still

cli_env = fx.cli_env
emulator = fx.emulator

# -- requests ---------------------------------------------------------------------


def test_a_path_where_a_url_goes_becomes_its_file_url(tmp_path: Path) -> None:
    """Every media field takes a Path and holds its absolute file:// URL."""
    path = tmp_path / "a b.jpg"
    url = path.as_uri()
    assert ImageKeyframe(path).url == url
    assert ImageRef(path, weight=0.5).url == url
    assert Media(path).url == url
    assert CharacterRef.of(path).identity0.images == (url,)
    assert ModifyVideoRequest(path, mode="flex_1").media.url == url
    assert local_url(path) == url and is_local(url)
    assert ImageKeyframe("https://example.com/a.jpg").url == "https://example.com/a.jpg"


def test_media_slots_name_fields_and_expected_media(tmp_path: Path) -> None:
    """Slots list each URL with its field and whether an image or a video goes there."""
    request = ModifyVideoRequest(tmp_path / "v.mp4", mode="flex_1", first_frame=tmp_path / "f.jpg")
    slots = [(s.field, s.expect) for s in media_slots(request)]
    assert slots == [("media.url", "video"), ("first_frame.url", "image")]
    image = ImageRequest(
        "a cat",
        image_ref=[ImageRef(tmp_path / "r.jpg")],
        character_ref=CharacterRef.of("https://x/c.jpg"),
    )
    swapped = replace_media_urls(image, lambda url: "https://cdn/" + url[-5:])
    assert [s.url for s in media_slots(swapped)] == ["https://cdn/r.jpg", "https://cdn/c.jpg"]
    assert swapped.prompt == "a cat"


# -- checks -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_check_accepts_the_image_formats_the_api_takes(tmp_path: Path, fmt: str) -> None:
    """JPEG, PNG and WebP stills pass, with their content type."""
    file = check_input(still(tmp_path / f"s.{fmt.lower()}", fmt=fmt), "image")
    assert file.media == "image" and file.content_type == f"image/{fmt.lower()}"


def test_check_accepts_video_containers_by_signature(tmp_path: Path) -> None:
    """MP4 and WebM are recognised by their first bytes, without decoding."""
    assert check_input(clip(tmp_path / "v.mp4"), "video").content_type == "video/mp4"
    assert check_input(clip(tmp_path / "v.webm", WEBM_HEAD), "video").suffix == ".webm"


def test_check_refuses_unusable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Missing, a folder, empty, not an image, a GIF, the wrong media, too large."""
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not an image")
    still(tmp_path / "anim.gif", fmt="GIF")
    cases = {
        (tmp_path / "missing.jpg", "image"): "no such file",
        (tmp_path, "image"): "not a regular file",
        (tmp_path / "empty.jpg", "image"): "empty file",
        (tmp_path / "notes.jpg", "image"): "is not an image",
        (tmp_path / "anim.gif", "image"): "GIF image: use JPEG, PNG or WebP",
        (still(tmp_path / "s.jpg"), "video"): "is an image: a video",
        (clip(tmp_path / "v.mp4"), "image"): "is a video: an image",
    }
    for (path, expect), message in cases.items():
        with pytest.raises(InputProblem, match=message):
            check_input(path, expect)  # type: ignore[arg-type]
    monkeypatch.setattr(_checks, "MAX_INPUT_IMAGE_BYTES", 10)
    with pytest.raises(InputProblem, match="images up to"):
        check_input(tmp_path / "s.jpg", "image")


# -- manifests ----------------------------------------------------------------------


def _video(item_id: str, frame: dict[str, object]) -> dict[str, object]:
    return {
        "id": item_id,
        "model": "ray-2",
        "prompt": "the scene comes alive",
        "keyframes": {"frame0": frame},
    }


def test_manifest_paths_are_relative_to_the_manifest(tmp_path: Path) -> None:
    """A "path" keyframe becomes the file's URL; the file is listed once."""
    still(tmp_path / "stills" / "a.jpg")
    manifest_path = write_jsonl(
        tmp_path / "m.jsonl",
        [_video("one", {"path": "stills/a.jpg"}), _video("two", {"path": "stills/a.jpg"})],
    )
    manifest = Manifest(manifest_path)
    manifest.check()
    items = list(manifest)
    request = items[0].request
    assert isinstance(request, VideoRequest) and isinstance(request.keyframes, Keyframes)
    frame = request.keyframes.frame0
    assert isinstance(frame, ImageKeyframe)
    assert frame.url == (tmp_path / "stills" / "a.jpg").as_uri()
    assert [f.path.name for f in manifest.input_files] == ["a.jpg"]


def test_manifest_reports_every_bad_file_with_file_line_field(tmp_path: Path) -> None:
    """Each bad file is a FILE:LINE: field: problem, other problems on the line too."""
    (tmp_path / "notes.jpg").write_text("text")
    clip(tmp_path / "v.mp4")
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            _video("ok", {"type": "image", "url": "https://example.com/a.jpg"}),
            _video("missing", {"type": "image", "path": "gone.jpg"}),
            {**_video("text", {"path": "notes.jpg"}), "prompt": "x"},
            {
                "id": "ref",
                "model": "photon-1",
                "prompt": "a red shoe",
                "style_ref": [{"path": "v.mp4", "weight": 0.5}],
                "character_ref": {"identity0": {"images": [{"path": "gone.jpg"}]}},
            },
            {"id": "mod", "type": "modify_video", "mode": "flex_1", "media": {"path": "notes.jpg"}},
            _video("both", {"path": "v.mp4", "url": "https://example.com/a.jpg"}),
        ],
    )
    with pytest.raises(ManifestError) as caught:
        Manifest(path).check()
    lines = [str(p).replace(str(tmp_path), "D") for p in caught.value.problems]
    assert lines == [
        f"{path}:2: keyframes.frame0.path: no such file: D/gone.jpg".replace(str(tmp_path), "D"),
        "D/m.jsonl:3: keyframes.frame0.path: D/notes.jpg is not an image "
        "(JPEG, PNG or WebP expected)",
        "D/m.jsonl:3: prompt: Prompt is too short, minimum length is 3 characters",
        "D/m.jsonl:4: style_ref[0].path: D/v.mp4 is a video: an image (JPEG, PNG or WebP) "
        "is expected here",
        "D/m.jsonl:4: character_ref.identity0.images[0].path: no such file: D/gone.jpg",
        "D/m.jsonl:5: media.path: D/notes.jpg is not a video: a video (MP4, MOV or WebM) "
        "is expected here",
        "D/m.jsonl:6: keyframes.frame0.path: give either url or path (a local file)",
    ]


def test_manifest_csv_and_yaml_take_path_columns(tmp_path: Path) -> None:
    """CSV names the column keyframes.frame0.path; YAML errors point at the path's line."""
    still(tmp_path / "a.jpg")
    csv = tmp_path / "m.csv"
    csv.write_text("id,model,prompt,keyframes.frame0.path\none,ray-2,a quiet harbour,a.jpg\n")
    manifest = Manifest(csv)
    manifest.check()
    assert [f.path.name for f in manifest.input_files] == ["a.jpg"]
    yaml = tmp_path / "m.yaml"
    yaml.write_text(
        "- id: one\n  model: ray-2\n  prompt: a quiet harbour\n  keyframes:\n"
        "    frame0:\n      path: nope.jpg\n"
    )
    with pytest.raises(ManifestError) as caught:
        Manifest(yaml).check()
    (problem,) = caught.value.problems
    assert (problem.line, problem.path) == (6, "keyframes.frame0.path")


def test_cli_refuses_a_missing_file_before_sending_anything(
    tmp_path: Path, cli_env: ThreadedEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing still: FILE:LINE on stderr, exit 2, no create, nothing uploaded."""
    still(tmp_path / "a.jpg")
    path = write_jsonl(
        tmp_path / "m.jsonl", [_video("a", {"path": "a.jpg"}), _video("b", {"path": "b.jpg"})]
    )
    status = cli.main(["run", str(path), "--out", str(tmp_path / "out"), "--emulator"])
    assert status == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{path}:2: keyframes.frame0.path: no such file: {tmp_path / 'b.jpg'}" in err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_local_files_with_nowhere_to_upload(
    tmp_path: Path, cli_env: ThreadedEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against a real API, local files need --upload: exit 2 before any create."""
    still(tmp_path / "a.jpg")
    path = write_jsonl(tmp_path / "m.jsonl", [_video("a", {"path": "a.jpg"})])
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out")]) == cli.EXIT_USAGE
    assert "--upload s3://BUCKET/PREFIX" in capsys.readouterr().err
    assert (
        cli_env.inspect.creates_by_kind == {} or sum(cli_env.inspect.creates_by_kind.values()) == 0
    )


# -- the emulator's store and reads --------------------------------------------------


async def test_emulator_store_needs_its_key_to_write_and_serves_anyone(tmp_path: Path) -> None:
    """PUT takes the emulator's key; GET and HEAD serve the bytes like a CDN."""
    async with Emulator(api_key="lm-key") as emu, aiohttp.ClientSession() as http:
        url = emu.origin + EMULATOR_UPLOADS_PATH + "abc.jpg"
        async with http.put(url, data=b"x") as response:
            assert response.status == 401
        async with http.put(url, data=b"jpeg", headers={"Authorization": "Bearer lm-key"}) as r:
            assert r.status == 201
        async with http.get(url) as response:
            assert (response.status, await response.read()) == (200, b"jpeg")
        async with http.get(emu.origin + EMULATOR_UPLOADS_PATH + "nope.jpg") as response:
            assert response.status == 404


async def test_a_local_still_becomes_an_image_to_video_on_the_emulator(tmp_path: Path) -> None:
    """Uploaded to the emulator's store once, read at create, the generation completes;
    a second job on the same file uploads nothing."""
    path = still(tmp_path / "a.jpg")
    request = VideoRequest("the sea moves", keyframes=Keyframes(ImageKeyframe(path)))
    async with (
        Emulator(api_key="lm-key", speed=2000, fetch_inputs=True) as emu,
        aiohttp.ClientSession() as http,
    ):
        log = UploadLog(tmp_path / "uploads.sqlite")
        uploads = Uploads(EmulatorTarget(emu.origin, "lm-key", http), log)
        first, _ = await run_one(emu, request, uploads)
        second, _ = await run_one(emu, request, uploads)
        log.close()
        assert first is not None and first.generation.state == "completed"
        assert second is not None and second.generation.state == "completed"
        assert uploads.stats.uploaded == 1 and emu.uploads.puts == 1
        body = first.generation.request or {}
        sent = body["keyframes"]["frame0"]["url"]
        assert sent.startswith(emu.origin + EMULATOR_UPLOADS_PATH)


async def test_an_unreadable_input_fails_the_generation_as_documented(tmp_path: Path) -> None:
    """An upload URL the emulator lacks, or a URL that 404s: "Failed to read user input frames"."""
    async with Emulator(api_key="lm-key", speed=2000, fetch_inputs=True) as emu:
        for url in (
            emu.origin + EMULATOR_UPLOADS_PATH + "0" * 64 + ".jpg",
            emu.origin + "/nowhere.jpg",
        ):
            request = VideoRequest("the sea moves", keyframes=Keyframes(ImageKeyframe(url)))
            _, error = await run_one(emu, request, None)
            assert isinstance(error, GenerationFailed)
            assert error.failure_reason == "Failed to read user input frames"


async def test_a_local_file_without_inputs_fails_the_job_unsent(tmp_path: Path) -> None:
    """No inputs= on the scheduler: the job fails naming the field, nothing is created."""
    request = VideoRequest(
        "the sea moves", keyframes=Keyframes(ImageKeyframe(still(tmp_path / "a.jpg")))
    )
    async with Emulator(api_key="lm-key", speed=2000) as emu:
        _, error = await run_one(emu, request, None)
        assert isinstance(error, ValidationError)
        assert "keyframes.frame0.url" in str(error)
        assert emu.inspect.gets == 0 and not emu.store.records


def test_results_json_of_a_local_input_run_is_plain(tmp_path: Path) -> None:
    """The manifest's request keeps the file URL (stable digests across runs)."""
    still(tmp_path / "a.jpg")
    path = write_jsonl(tmp_path / "m.jsonl", [_video("a", {"path": "a.jpg"})])
    manifest = Manifest(path)
    manifest.check()
    (item,) = list(manifest)
    assert json.dumps(item.request.to_body()).count("file://") == 1


async def test_a_file_gone_since_its_check_is_an_upload_error(tmp_path: Path) -> None:
    """Deleted between the check and the upload: UploadError naming the file."""
    path = still(tmp_path / "a.jpg")
    async with Emulator(api_key="lm-key") as emu, aiohttp.ClientSession() as http:
        with UploadLog(":memory:") as log:
            uploads = Uploads(EmulatorTarget(emu.origin, "lm-key", http), log)
            file = await uploads.checked(path, "image")
            path.unlink()
            with pytest.raises(UploadError, match=r"cannot read .*a\.jpg"):
                await uploads.prepare([file])
        assert emu.uploads.puts == 0


def test_emulator_command_fetch_inputs_flag() -> None:
    """``lumasched emulator --fetch-inputs`` turns on reading every input URL."""
    from lumasched.cli._emulator import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args(["--fetch-inputs"])).fetch_inputs
    assert not config_from_args(build_parser().parse_args([])).fetch_inputs


def test_cli_emulator_stores_each_still_once_and_dry_run_says_what_is_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline: three items on two stills upload two files; the dry run before lists
    them to upload, after lists them as there; a rerun uploads nothing."""
    monkeypatch.delenv("LUMAAI_API_KEY", raising=False)
    still(tmp_path / "a.jpg")
    still(tmp_path / "b.png", (0, 0, 200), "PNG")
    items = [
        _video(f"v{i}", {"path": "ab"[i % 2] + (".jpg" if i % 2 == 0 else ".png")})
        for i in range(3)
    ]
    path = write_jsonl(tmp_path / "m.jsonl", items)
    out = tmp_path / "out"
    args = ["run", str(path), "--out", str(out), "--emulator", "--emulator-speed", "2000"]
    assert cli.main([*args, "--dry-run"]) == cli.EXIT_OK
    planned = capsys.readouterr().out
    assert "local inputs: 2 files (" in planned and "0 files (0.0 kB) already there" in planned
    assert not out.exists()
    assert cli.main([*args, "--no-progress"]) == cli.EXIT_OK
    ran = capsys.readouterr()
    assert "uploaded 2 files (" in ran.out + ran.err
    assert {row["state"] for row in fx.read_results(out).values()} == {"completed"}
    assert cli.main([*args, "--dry-run"]) == cli.EXIT_OK
    assert "0 files (0.0 kB) to upload to the emulator's store, 2 files (" in (
        capsys.readouterr().out
    )
    assert cli.main([*args, "--no-progress"]) == cli.EXIT_OK
    ran = capsys.readouterr()
    assert "uploaded 0 files (0.0 kB)" in ran.out + ran.err


async def test_a_local_clip_is_restyled_on_the_emulator(tmp_path: Path) -> None:
    """modify_video of a 9 MB local clip: streamed to the store, read at create, completed."""
    path = clip(tmp_path / "take.mp4", size=9 * 1024 * 1024)
    async with (
        Emulator(api_key="lm-key", speed=2000) as emu,
        aiohttp.ClientSession() as http,
    ):
        with UploadLog(":memory:") as log:
            uploads = Uploads(EmulatorTarget(emu.origin, "lm-key", http), log)
            result, error = await run_one(emu, ModifyVideoRequest(path, mode="flex_1"), uploads)
        assert error is None and result is not None
        assert result.generation.state == "completed"
        assert emu.uploads.puts == 1
        sent = (result.generation.request or {})["media"]["url"]
        assert sent.startswith(emu.origin + EMULATOR_UPLOADS_PATH) and sent.endswith(".mp4")


def test_manifest_checks_a_file_url_written_out(tmp_path: Path) -> None:
    """A literal file:// URL in "url" is checked like a "path"."""
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [_video("a", {"type": "image", "url": (tmp_path / "gone.jpg").as_uri()})],
    )
    with pytest.raises(ManifestError) as caught:
        Manifest(path).check()
    (problem,) = caught.value.problems
    assert (problem.line, problem.path) == (1, "keyframes.frame0.url")
    assert "no such file" in problem.message
