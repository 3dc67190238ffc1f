"""Pre-render the emulator's tiny video clips (one per aspect ratio).

Run once by a developer (needs PyAV, a test/dev dependency, never a runtime one)::

    .venv/bin/python scripts/make_emulator_assets.py

It writes ``lumasched/emulator/assets/clip_<W>x<H>.mp4``: H.264, 24 fps, 1 s, a
moving colour gradient. The emulator serves these files, each followed by an
MP4 ``free`` box that makes every generation's file unique and as large as asked.
"""

from __future__ import annotations

from pathlib import Path

import av
from PIL import Image, ImageDraw

from lumasched.emulator._assets import CLIP_SCALE, REFRAME_SIZES

ASSETS = Path(__file__).resolve().parent.parent / "lumasched" / "emulator" / "assets"

# The docs' reframe table divided by 8.
SIZES = {ratio: (w // CLIP_SCALE, h // CLIP_SCALE) for ratio, (w, h) in REFRAME_SIZES.items()}
FPS = 24
FRAMES = 24


def render(path: Path, width: int, height: int) -> None:
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryslow", "crf": "35", "tune": "animation"}
        for i in range(FRAMES):
            image = Image.new("RGB", (width, height), (20, 40 + i * 4, 120))
            draw = ImageDraw.Draw(image)
            x = i * (width - height // 3) // FRAMES
            draw.ellipse((x, height // 3, x + height // 3, 2 * height // 3), fill=(250, 200, 40))
            video_frame = av.VideoFrame.from_image(image)
            for packet in stream.encode(video_frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main() -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    for width, height in SIZES.values():
        path = ASSETS / f"clip_{width}x{height}.mp4"
        render(path, width, height)
        print(path.relative_to(ASSETS.parent.parent.parent), path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
