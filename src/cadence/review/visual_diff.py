"""Pictures for ``campaigns diff``: each changed email before and after, side by side, at phone
and desktop widths, and a third panel with the pixels that differ in red; and a ``diff.html``
page beside the preview grid that lists every change with its pictures.

Screenshots come from :func:`cadence.review.previews.screenshot_emails` (the system's headless
Chromium, nothing fetched); the comparison is Pillow's ``ImageChops.difference``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageChops

from cadence.review.campaign_diff import CampaignDiff, EmailChange, describe
from cadence.review.previews import screenshot_emails

WIDTHS = (375, 600)
MARK = (230, 0, 80)  # the red of the differing pixels
THRESHOLD = 16  # per-channel difference below which anti-aliasing noise is ignored
GAP = 24  # grey gutter between the two screenshots


def highlight(before: Path, after: Path, out: Path) -> tuple[int, int, int, int] | None:
    """Write three panels to `out`: `before`, `after`, and `after` faded with the pixels that
    differ from `before` in solid red (as pixelmatch draws it).

    Returns the box (left, top, right, bottom) of the differing pixels, None if none differ. A
    taller screenshot is compared against white below the shorter one.
    """
    with Image.open(before) as a, Image.open(after) as b:
        width, height = max(a.width, b.width), max(a.height, b.height)
        old, new = (_on_canvas(image.convert("RGB"), width, height) for image in (a, b))
    mask = ImageChops.difference(old, new).convert("L").point(lambda v: 255 if v > THRESHOLD else 0)
    box = mask.getbbox()
    faded = Image.blend(new.convert("L").convert("RGB"), Image.new("RGB", (width, height), (255, 255, 255)), 0.7)
    marked = Image.composite(Image.new("RGB", (width, height), MARK), faded, mask)
    canvas = Image.new("RGB", (3 * width + 2 * GAP, height), (190, 190, 190))
    for index, image in enumerate((old, new, marked)):
        canvas.paste(image, (index * (width + GAP), 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)
    return box


def _on_canvas(image: Image.Image, width: int, height: int) -> Image.Image:
    if image.size == (width, height):
        return image
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    return canvas


def picture_changes(
    changes: Sequence[EmailChange], out_dir: Path, *, executable_path: str = "/usr/bin/chromium"
) -> None:
    """Screenshot both sides of every changed email and fill in its ``pictures`` and ``differing``."""
    shots_dir = out_dir / "screenshots"
    pages: dict[str, str] = {}
    for change in changes:
        for label, side in (("before", change.before), ("after", change.after)):
            pages[f"{change.name}--{label}"] = side.html or _placeholder(side.error or change.status)
    if not pages:
        return
    taken = screenshot_emails(pages, shots_dir, widths=WIDTHS, executable_path=executable_path)
    shots = {(shot.name, shot.width): shot.path for shot in taken}
    for change in changes:
        for width in WIDTHS:
            before, after = shots[(f"{change.name}--before", width)], shots[(f"{change.name}--after", width)]
            path = out_dir / f"{change.name}-{width}.png"
            change.differing[width] = highlight(before, after, path)
            change.pictures.append(path)


def _placeholder(reason: str) -> str:
    return f'<!doctype html><p style="font:16px sans-serif;padding:24px;color:#555">({html.escape(reason)})</p>'


def write_diff_page(diff: CampaignDiff, revision: str, out_dir: Path, preview_index: Path | None) -> Path:
    """``diff.html`` in `out_dir` (the preview grid's directory): every changed email, how, and its
    pictures (which :func:`picture_changes` wrote under `out_dir`). Returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for change in diff.emails:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in describe(change))
        name = html.escape(change.name)
        pictures = "".join(
            f'<figure><img src="{html.escape(p.relative_to(out_dir).as_posix())}" alt="{name} before and after at '
            f'{w} px" width="{3 * w + 2 * GAP}"><figcaption>{w} px: before | now | what differs</figcaption></figure>'
            for w, p in zip(WIDTHS, change.pictures, strict=False)
        )
        rows.append(f"<section><h2>{name} ({change.status})</h2><ul>{items}</ul>{pictures}</section>")
    grid = f'<p><a href="{html.escape(preview_index.name)}">The preview grid (now)</a></p>' if preview_index else ""
    title = f"{diff.campaign_id}: {len(diff.emails)} of {diff.total} emails changed since {revision}"
    page = _PAGE.format(title=html.escape(title), grid=grid, rows="\n".join(rows) or "<p>No email changed.</p>")
    path = out_dir / "diff.html"
    path.write_text(page, encoding="utf-8")
    return path


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 16px; background: #eee; }}
section {{ background: #fff; border: 1px solid #ccc; padding: 8px 16px; margin: 0 0 16px; }}
figure {{ margin: 8px 0; }} img {{ max-width: 100%; height: auto; border: 1px solid #bbb; }}
</style></head>
<body><h1>{title}</h1>{grid}
<p>Left: the email at the revision; middle: the working tree; right: the pixels that differ, in red.</p>
{rows}
</body></html>
"""
