"""Pre-render the emulator's tiny media segments.

Run once by a developer (needs PyAV, a test/dev dependency, never a runtime one)::

    .venv/bin/python scripts/make_emulator_assets.py

It writes into ``lumasched/emulator/assets/``:

* ``video_<W>x<H>.mp4`` for every aspect ratio and resolution (the frame size
  is the real one divided by 8, rounded to even): H.264, 24 fps, one second,
  24 frames forming one closed GOP (an IDR frame, then P frames, no B frames);
* ``audio.m4a``: two seconds of AAC-LC, 48 kHz mono, a quiet tone.

The emulator never re-encodes: it builds each generation's MP4 by repeating the
one-second segment for the requested duration and, after ``add_audio``,
interleaving AAC frames (``lumasched/emulator/_mp4.py``).
"""

from __future__ import annotations

import array
import math
from pathlib import Path

import av
from PIL import Image, ImageDraw

from lumasched.emulator._assets import AUDIO_FILE, video_clip_name
from lumasched.emulator._mp4 import FPS, SAMPLE_RATE, clip_size
from lumasched.pricing import ASPECT_RATIOS, RESOLUTIONS

ASSETS = Path(__file__).resolve().parent.parent / "lumasched" / "emulator" / "assets"


def render_video(path: Path, width: int, height: int) -> None:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {
            "preset": "veryslow",
            "crf": "35",
            "tune": "animation",
            "x264-params": f"bframes=0:keyint={FPS}:min-keyint={FPS}:scenecut=0",
        }
        for i in range(FPS):
            image = Image.new("RGB", (width, height), (20, 40 + i * 4, 120))
            draw = ImageDraw.Draw(image)
            side = max(2, height // 3)
            x = i * max(1, width - side) // FPS
            draw.ellipse((x, height // 3, x + side, height // 3 + side), fill=(250, 200, 40))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def render_audio(path: Path, seconds: int = 2) -> None:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=SAMPLE_RATE)
        stream.layout = "mono"
        stream.bit_rate = 24_000
        total = SAMPLE_RATE * seconds
        tone = array.array(
            "h", (int(3000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)) for i in range(total))
        )
        for start in range(0, total, 1024):
            chunk = tone[start : start + 1024]
            frame = av.AudioFrame(format="s16", layout="mono", samples=len(chunk))
            frame.planes[0].update(chunk.tobytes())
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main() -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    for old in ASSETS.glob("clip_*.mp4"):
        old.unlink()
    paths = []
    for aspect_ratio in ASPECT_RATIOS:
        for resolution in RESOLUTIONS:
            width, height = clip_size(resolution, aspect_ratio)
            path = ASSETS / video_clip_name(resolution, aspect_ratio)
            render_video(path, width, height)
            paths.append(path)
    render_audio(ASSETS / AUDIO_FILE)
    paths.append(ASSETS / AUDIO_FILE)
    for path in paths:
        print(path.name, path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
