"""The Pillow and libvips side of bench/run: the same three operations on the
same input files, each run from encoded bytes in memory to a result in memory.

Prints one tab-separated line per measurement, like the Rust side:
    op  tool  median_ms  min_ms  output_bytes
"""
import io
import statistics
import sys
import time

import pyvips
from PIL import Image


def timed(runs, fn):
    last = fn()  # warm-up
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        last = fn()
        ms.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(ms), min(ms), last


def main():
    folder, runs = sys.argv[1], int(sys.argv[2])
    png = open(f"{folder}/in1024.png", "rb").read()
    jpg = open(f"{folder}/in4096.jpg", "rb").read()

    def line(op, tool, result, size):
        median, low, _ = result
        print(f"{op}\t{tool}\t{median:.1f}\t{low:.1f}\t{size}", flush=True)

    # (a) 1024^2 PNG -> 4096^2 Lanczos3, pixels in memory.
    def pil_up():
        im = Image.open(io.BytesIO(png))
        return im.resize((4096, 4096), Image.Resampling.LANCZOS).tobytes()

    def vips_up():
        return pyvips.Image.new_from_buffer(png, "").resize(4, kernel="lanczos3").write_to_memory()

    r = timed(runs, pil_up)
    line("upscale", "pillow", r, len(r[2]))
    r = timed(runs, vips_up)
    line("upscale", "vips", r, len(r[2]))

    # (b) 4096^2 JPEG -> 384 px WebP (quality 80), each tool's usual thumbnail path
    #     (Pillow's thumbnail() uses JPEG draft mode, vips thumbnail shrinks on load).
    def pil_thumb():
        im = Image.open(io.BytesIO(jpg))
        im.thumbnail((384, 384), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        im.save(out, "WEBP", quality=80)
        return out.getvalue()

    def vips_thumb():
        return pyvips.Image.thumbnail_buffer(jpg, 384).webpsave_buffer(Q=80)

    r = timed(runs, pil_thumb)
    line("thumbnail", "pillow", r, len(r[2]))
    r = timed(runs, vips_thumb)
    line("thumbnail", "vips", r, len(r[2]))

    # (c) JPEG decode + re-encode at quality 85.
    def pil_recode():
        im = Image.open(io.BytesIO(jpg))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=85)
        return out.getvalue()

    def vips_recode():
        return pyvips.Image.new_from_buffer(jpg, "", access="sequential").jpegsave_buffer(Q=85)

    r = timed(runs, pil_recode)
    line("recode", "pillow", r, len(r[2]))
    r = timed(runs, vips_recode)
    line("recode", "vips", r, len(r[2]))


if __name__ == "__main__":
    main()
