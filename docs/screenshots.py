"""Compose the README's map screenshot from the viewer screenshots the tests take.

``tests/test_map_viewer.py`` opens a published product's ``preview`` links (true colour
and NDVI) in Chromium and saves ``.test-artifacts/browser/map-true-color.png`` and
``map-ndvi.png``; this lays them side by side, each under its title, into
``docs/screenshots/map.png``::

    .venv/bin/python -m pytest -q tests/test_map_viewer.py
    .venv/bin/python docs/screenshots.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / ".test-artifacts" / "browser"
OUT = REPO / "docs" / "screenshots" / "map.png"
PANELS = (("map-true-color.png", "True colour"), ("map-ndvi.png", "NDVI"))
MAX_BYTES = 300_000  # the README's pictures stay small in the repository
TITLE_PX = 34
GAP_PX = 8
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")  # fonts-dejavu-core


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if FONT.is_file():
        return ImageFont.truetype(str(FONT), size)
    return ImageFont.load_default(size)


def compose(panels: list[tuple[Path, str]], out: Path) -> Path:
    """``panels`` (screenshot, title) side by side, each titled, saved as a palette PNG."""
    images = [Image.open(path).convert("RGB") for path, _ in panels]
    height = max(im.height for im in images)
    width = sum(im.width for im in images) + GAP_PX * (len(images) - 1)
    sheet = Image.new("RGB", (width, height + TITLE_PX), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(18)
    x = 0
    for image, (_, title) in zip(images, panels, strict=True):
        sheet.paste(image, (x, TITLE_PX))
        draw.text((x + 10, 7), title, fill=(30, 30, 30), font=font)
        x += image.width + GAP_PX
    # 256 colours are plenty for flat map colours and keep the file small.
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    size = out.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{out} is {size} bytes, over the {MAX_BYTES} allowed")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    panels = [(args.artifacts / name, title) for name, title in PANELS]
    missing = [str(path) for path, _ in panels if not path.is_file()]
    if missing:
        sys.stderr.write(
            f"missing viewer screenshots {missing}: run "
            ".venv/bin/python -m pytest tests/test_map_viewer.py first\n"
        )
        return 1
    out = compose(panels, args.out)
    sys.stdout.write(f"{out} ({out.stat().st_size} bytes)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
