"""The lower-back-pain course as the rendering tests read it: the real campaign file, the real
templates, sample personal links and a sample subscriber."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from cadence.core.campaign import Campaign
from cadence.core.render import Renderer
from cadence.files.campaigns import load_campaign

REPO = Path(__file__).resolve().parents[2]
LINKS = {
    "unsubscribe": "https://cadence.example/u/tok-u",
    "preferences": "https://cadence.example/p/tok-p",
    "web_view": "https://cadence.example/v/tok-v",
}
JORDAN: dict[str, Any] = {"first_name": "Jordan", "email": "jordan@example.com", "attributes": {}}


def course_campaign() -> Campaign:
    return load_campaign(REPO / "campaigns" / "lower-back-pain.yaml")


def course_renderer() -> Renderer:
    return Renderer(jinja2.FileSystemLoader(str(REPO / "templates")))
