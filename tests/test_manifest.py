"""Manifest parsing and whole-file validation (JSONL, CSV, YAML)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lumasched.limits import Family
from lumasched.manifest import (
    Manifest,
    ManifestError,
    ManifestItem,
    load_manifest,
    ref_placeholder,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(tmp_path: Path, *lines: object, name: str = "m.jsonl") -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    return write(tmp_path, name, text + "\n")


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        Manifest(path).check()
    return [str(problem) for problem in info.value.problems]


def test_jsonl_items_ids_types_and_comments(tmp_path: Path) -> None:
    """JSONL skips blank and # lines, infers type from model, defaults ids from line numbers."""
    path = jsonl(
        tmp_path,
        "# a comment",
        {"id": "cat", "prompt": "a cat on a sofa", "model": "photon-1"},
        "",
        {"prompt": "a dog running on a beach", "model": "ray-2", "duration": "5s"},
        {"type": "video", "prompt": "waves at dusk", "model": "ray-flash-2"},
    )
    summary = Manifest(path).check()
    items = load_manifest(path)
    assert [(i.id, i.kind, i.line) for i in items] == [
        ("cat", "image", 2),
        ("line-4", "video", 4),
        ("line-5", "video", 5),
    ]
    assert items[0].family is Family.IMAGE
    assert items[1].request.to_body()["duration"] == "5s"
    assert summary.count == 3
    assert summary.groups[(Family.VIDEO, "video", "ray-2")] == 1
    assert summary.groups[(Family.IMAGE, "image", "photon-1")] == 1


def test_chained_refs_become_dependencies(tmp_path: Path) -> None:
    """Keyframe refs and upscale sources name items; resolve() swaps in real ids."""
    path = jsonl(
        tmp_path,
        {"id": "base", "prompt": "a lighthouse in a storm", "model": "ray-2"},
        {
            "id": "ext",
            "prompt": "the storm clears",
            "model": "ray-2",
            "keyframes": {"frame0": {"type": "generation", "ref": "base"}},
        },
        {"id": "big", "type": "upscale", "source": "ext", "resolution": "1080p"},
    )
    items = load_manifest(path)
    assert [i.deps for i in items] == [(), ("base",), ("ext",)]
    ext = items[1]
    body = ext.request.to_body()
    assert body["keyframes"]["frame0"] == {"type": "generation", "id": ref_placeholder("base")}
    real = "11111111-2222-3333-4444-555555555555"
    resolved = ext.resolve(lambda item_id: real if item_id == "base" else "?")
    assert resolved.to_body()["keyframes"]["frame0"]["id"] == real
    upscale = items[2].resolve(lambda item_id: real)
    assert (
        upscale.path.endswith(f"/generations/{real}/upscale")
        or getattr(upscale, "generation_id", None) == real
    )


def test_submission_order_puts_forward_refs_after_their_target(tmp_path: Path) -> None:
    """An item naming a later item is yielded right after that item."""
    path = jsonl(
        tmp_path,
        {"id": "up", "type": "upscale", "source": "vid"},
        {"id": "other", "prompt": "a red balloon drifting", "model": "ray-2"},
        {"id": "vid", "prompt": "a blue balloon drifting", "model": "ray-2"},
    )
    manifest = Manifest(path)
    manifest.check()
    assert [i.id for i in manifest.submission_order()] == ["other", "vid", "up"]


def test_every_problem_is_reported_at_once_with_file_and_line(tmp_path: Path) -> None:
    """Unknown fields, bad ids, enums, weights, JSON, refs and cycles: all reported in one run."""
    path = jsonl(
        tmp_path,
        {"id": "a", "promt": "typo in the field name", "model": "ray-2"},
        {"id": "a", "prompt": "a duplicate id here", "model": "ray-2"},
        {"id": "../evil", "prompt": "an unsafe id here", "model": "ray-2"},
        {"id": "b", "prompt": "a bad aspect ratio", "model": "ray-2", "aspect_ratio": "2:1"},
        {
            "id": "c",
            "prompt": "a bad weight value",
            "model": "photon-1",
            "image_ref": [{"url": "https://x.test/a.jpg", "weight": 7}],
        },
        '{"id": "d", "prompt": "broken json"',
        {"id": "e", "type": "upscale", "source": "nowhere"},
        {"id": "f", "type": "upscale", "source": "g"},
        {"id": "g", "type": "audio", "source": "f"},
        {"id": "h", "prompt": "no model given"},
        {"id": "i", "type": "picture", "prompt": "a wrong type", "model": "photon-1"},
    )
    got = problems_of(path)
    name = str(path)
    expected_prefixes = [
        f"{name}:1: promt: ",
        f"{name}:2: id: duplicate id 'a' (first on line 1)",
        f"{name}:3: id: '../evil' is not a safe file name",
        f"{name}:4: aspect_ratio: ",
        f"{name}:5: image_ref[0].weight: ",
        f"{name}:6: invalid JSON: ",
        f"{name}:7: source: no item with id 'nowhere'",
        f"{name}:9: source: cycle: ",
        f"{name}:10: type: missing, and cannot be inferred without a model",
        f"{name}:11: type: unknown type 'picture'",
    ]
    for prefix in expected_prefixes:
        assert any(line.startswith(prefix) for line in got), (prefix, got)
    assert [p.split(":")[1] for p in got] == sorted((p.split(":")[1] for p in got), key=int), (
        "problems are in file order"
    )


def test_refs_must_name_video_items(tmp_path: Path) -> None:
    """Extending or upscaling an image item is a manifest error."""
    path = jsonl(
        tmp_path,
        {"id": "pic", "prompt": "a still life with pears", "model": "photon-1"},
        {
            "id": "v",
            "prompt": "the pears start to roll",
            "model": "ray-2",
            "keyframes": {"frame0": {"type": "generation", "ref": "pic"}},
        },
    )
    assert problems_of(path) == [
        f"{path}:2: keyframes.frame0.ref: item 'pic' is 'image': only a video can be built on"
    ]


def test_too_many_references_and_loop_rules(tmp_path: Path) -> None:
    """API rules (at most 4 image refs, no loop on a reverse extend) surface with their field."""
    refs = [{"url": f"https://x.test/{n}.jpg", "weight": 0.5} for n in range(5)]
    path = jsonl(
        tmp_path,
        {"id": "base", "prompt": "a quiet harbour at dawn", "model": "ray-2"},
        {
            "id": "many",
            "prompt": "too many image references",
            "model": "photon-1",
            "image_ref": refs,
        },
        {
            "id": "looped",
            "prompt": "the harbour wakes up",
            "model": "ray-2",
            "loop": True,
            "keyframes": {"frame1": {"type": "generation", "ref": "base"}},
        },
    )
    got = problems_of(path)
    assert any(line.startswith(f"{path}:2: image_ref") for line in got), got
    assert f"{path}:3: loop: Loop is not supported for extend reverse" in got, got


def test_keyframe_ref_with_an_id_or_wrong_type_is_rejected(tmp_path: Path) -> None:
    """A keyframe gives either a generation id or an item ref, and refs are generation keyframes."""
    path = jsonl(
        tmp_path,
        {"id": "base", "prompt": "a quiet harbour at dawn", "model": "ray-2"},
        {
            "prompt": "both id and ref",
            "model": "ray-2",
            "keyframes": {"frame0": {"type": "generation", "ref": "base", "id": "x"}},
        },
        {
            "prompt": "an image keyframe with a ref",
            "model": "ray-2",
            "keyframes": {"frame1": {"type": "image", "ref": "base"}},
        },
    )
    got = problems_of(path)
    assert f"{path}:2: keyframes.frame0.ref: give either id (a generation) or ref (an item)" in got
    assert (
        f"{path}:3: keyframes.frame1.ref: only a keyframe of type 'generation' can name an item"
        in got
    )


def test_non_objects_duplicate_keys_and_empty_files(tmp_path: Path) -> None:
    """A line that is not an object, a key given twice, and an empty file are errors."""
    path = jsonl(tmp_path, '["a list"]', '{"prompt": "x", "prompt": "y", "model": "ray-2"}')
    got = problems_of(path)
    assert got[0].startswith(f"{path}:1: an item must be an object")
    typo = jsonl(tmp_path, {"promt": "a typo", "model": "ray-2"}, name="typo.jsonl")
    assert f"{typo}:1: promt: unknown field (did you mean 'prompt'?)" in problems_of(typo)
    assert got[1] == f"{path}:2: prompt: given twice"
    empty = write(tmp_path, "empty.jsonl", "# nothing here\n\n")
    assert problems_of(empty) == [f"{empty}: no items"]


def test_unknown_format_is_an_error(tmp_path: Path) -> None:
    """A suffix that names no manifest format is reported, not guessed."""
    path = write(tmp_path, "m.txt", "{}\n")
    assert "unknown manifest format" in problems_of(path)[0]


def test_csv_dotted_columns_json_cells_and_types(tmp_path: Path) -> None:
    """CSV cells are strings except JSON, boolean and numeric fields; dotted columns nest."""
    path = write(
        tmp_path,
        "m.csv",
        "id,type,model,prompt,loop,image_ref.0.url,image_ref.0.weight,keyframes\n"
        "pic,,photon-1,a bowl of lemons,,https://x.test/a.jpg,0.8,\n"
        'vid,video,ray-2,"a slow pan, across a field",true,,,'
        '"{""frame0"": {""type"": ""image"", ""url"": ""https://x.test/b.jpg""}}"\n',
    )
    items = load_manifest(path)
    assert [(i.id, i.line) for i in items] == [("pic", 2), ("vid", 3)]
    pic = items[0].request.to_body()
    assert pic["image_ref"] == [{"url": "https://x.test/a.jpg", "weight": 0.8}]
    vid = items[1].request.to_body()
    assert vid["loop"] is True
    assert vid["prompt"] == "a slow pan, across a field"
    assert vid["keyframes"]["frame0"]["url"] == "https://x.test/b.jpg"


def test_csv_reframe_pixel_columns_are_integers(tmp_path: Path) -> None:
    """Reframe grid, crop and resize cells are read as integers; anything else is a problem."""
    header = "id,type,media.url,aspect_ratio,x_start,x_end,resized_width\n"
    good = write(tmp_path, "ok.csv", header + "r,reframe_image,https://x.test/a.jpg,1:1,0,64,32\n")
    (item,) = load_manifest(good)
    body = item.request.to_body()
    assert (body["x_start"], body["x_end"], body["resized_width"]) == (0, 64, 32)
    bad = write(tmp_path, "bad.csv", header + "r,reframe_image,https://x.test/a.jpg,1:1,0,1.5,\n")
    assert problems_of(bad) == [f"{bad}:2: x_end: must be an integer, got '1.5'"]


def test_csv_refs_and_line_numbers_after_multiline_cells(tmp_path: Path) -> None:
    """A quoted cell spanning lines keeps later rows' line numbers right; refs work in CSV."""
    path = write(
        tmp_path,
        "m.csv",
        "id,type,model,prompt,keyframes.frame0.type,keyframes.frame0.ref,source,loop\n"
        'base,video,ray-2,"a prompt\nover two lines",,,,\n'
        "ext,video,ray-2,the sequel of the scene,generation,base,,\n"
        "up,upscale,,,,,ext,\n"
        "bad,video,ray-2,a bad boolean here,,,,maybe\n",
    )
    got = problems_of(path)
    assert got == [f"{path}:6: loop: must be true or false, got 'maybe'"]


def test_csv_header_problems_and_unknown_columns(tmp_path: Path) -> None:
    """Duplicate header names stop the check; unknown columns are reported per row."""
    dup = write(tmp_path, "dup.csv", "prompt,model,prompt\nx,ray-2,y\n")
    assert problems_of(dup) == [f"{dup}:1: prompt: column given twice"]
    typo = write(tmp_path, "typo.csv", "model,promt\nray-2,a typo in the header\nray-2,\n")
    got = problems_of(typo)
    assert any(line.startswith(f"{typo}:2: promt: ") for line in got), got
    assert not any(line.startswith(f"{typo}:3: promt") for line in got), got


def test_yaml_items_and_field_line_numbers(tmp_path: Path) -> None:
    """YAML problems point at the field's own line; 16:9 stays a string."""
    path = write(
        tmp_path,
        "m.yaml",
        "# a YAML manifest\n"
        "- id: wide\n"
        "  model: ray-2\n"
        "  prompt: a wide shot of a canyon\n"
        "  aspect_ratio: 16:9\n"
        "- id: typo\n"
        "  model: ray-2\n"
        "  prompt: a second shot of the canyon\n"
        "  resolution: 8k\n",
    )
    got = problems_of(path)
    assert len(got) == 1 and got[0].startswith(f"{path}:9: resolution: "), got
    path.write_text(path.read_text().replace("8k", "720p"))
    items = load_manifest(path)
    assert [(i.id, i.line) for i in items] == [("wide", 2), ("typo", 6)]
    assert items[0].request.to_body()["aspect_ratio"] == "16:9"


def test_yaml_syntax_errors_and_wrong_shape(tmp_path: Path) -> None:
    """Broken YAML reports its line; a top-level mapping is not a manifest."""
    broken = write(tmp_path, "b.yaml", "- id: a\n  prompt: [unclosed\n- id: b\n")
    got = problems_of(broken)
    assert len(got) == 1 and got[0].startswith(f"{broken}:") and "invalid YAML" in got[0]
    mapping = write(tmp_path, "m.yml", "prompt: hello\nmodel: ray-2\n")
    assert problems_of(mapping) == [
        f"{mapping}:1: a YAML manifest is a list of items (each starting with '- ')"
    ]


def test_json_array_file(tmp_path: Path) -> None:
    """A .json file holding an array of items is read with line numbers."""
    path = write(
        tmp_path,
        "m.json",
        '[\n  {"id": "a", "prompt": "a paper boat", "model": "photon-1"},\n'
        '  {"id": "b", "prompt": "a paper plane", "model": "photon-flash-1", "format": "gif"}\n]\n',
    )
    got = problems_of(path)
    assert len(got) == 1 and got[0].startswith(f"{path}:3: format: "), got


def test_iteration_rechecks_a_file_changed_after_check(tmp_path: Path) -> None:
    """Editing the manifest between check and iteration re-validates it."""
    path = jsonl(tmp_path, {"prompt": "a snowy owl", "model": "photon-1"})
    manifest = Manifest(path)
    manifest.check()
    path.write_text(json.dumps({"promt": "a snowy owl", "model": "photon-1"}) + "\n")
    os.utime(path, ns=(1, 1))
    with pytest.raises(ManifestError):
        list(manifest)


def test_check_streams_items_to_a_visitor(tmp_path: Path) -> None:
    """on_item sees each valid item during the single checking pass."""
    path = jsonl(
        tmp_path, *({"prompt": f"a numbered prompt {n}", "model": "photon-1"} for n in range(50))
    )
    seen: list[ManifestItem] = []
    summary = Manifest(path).check(on_item=seen.append)
    assert summary.count == 50
    assert [i.id for i in seen] == [f"line-{n}" for n in range(1, 51)]


def test_csv_cell_types_come_from_the_request_models() -> None:
    """Which CSV cells hold JSON, true/false or numbers is read off the attrs request
    models (no table kept by hand); these are the fields a user can type in a cell."""
    from lumasched.manifest import _formats

    assert {
        "keyframes", "frame0", "frame1", "concepts", "image_ref", "style_ref",
        "character_ref", "identity0", "images", "modify_image_ref", "media", "first_frame",
    } == _formats._CSV_JSON_FIELDS  # fmt: skip
    assert {"loop", "sync"} == _formats._CSV_BOOL_FIELDS
    assert {"weight", "sync_timeout"} == _formats._CSV_FLOAT_FIELDS
    assert {
        "grid_position_x", "grid_position_y", "x_start", "x_end", "y_start", "y_end",
        "resized_width", "resized_height",
    } == _formats._CSV_INT_FIELDS  # fmt: skip
