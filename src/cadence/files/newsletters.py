"""Newsletter files: ``campaigns/newsletters/<id>.yaml`` (``kind: newsletter``), read and checked.

The fields are validated by the pure model (core/newsletter.py); here we read the file and check
what it points at: the drip it is based on, the drip whose segments it names, its template.
Every error names the file and the field, like campaign files do (files/campaigns.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cadence.core.campaign import Campaign
from cadence.core.newsletter import Newsletter, newsletter_from_data
from cadence.errors import CampaignError, NotFound
from cadence.files.campaigns import find_campaign, not_found_message, read_yaml_file

__all__ = [
    "NEWSLETTERS_FOLDER",
    "find_newsletter",
    "is_newsletter",
    "list_newsletters",
    "load_newsletter",
    "referenced_campaigns",
]

NEWSLETTERS_FOLDER = "newsletters"  # under the campaigns directory
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def load_newsletter(path: Path) -> Newsletter:
    """Read and validate one newsletter file; the id must be the file's name."""
    source = str(path)
    _, data = read_yaml_file(path, "newsletter")
    newsletter = newsletter_from_data(data, source)
    if newsletter.id != path.stem:
        # Staff name a newsletter by its file; a different id inside would make two names for one.
        raise CampaignError(f"{source}: id: {newsletter.id!r} must be the file's name ({path.stem!r})")
    return newsletter


def find_newsletter(name: str, campaigns_dir: Path) -> Newsletter:
    """``<campaigns_dir>/newsletters/<name>.yaml`` (or .yml); `name` may also be a file's path."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return load_newsletter(candidate)
    if not _ID.match(name):
        raise NotFound(f"no newsletter {name!r}: names are lowercase letters, digits, - and _")
    for suffix in (".yaml", ".yml"):
        path = campaigns_dir / NEWSLETTERS_FOLDER / f"{name}{suffix}"
        if path.is_file():
            return load_newsletter(path)
    names = [path.stem for path in list_newsletters(campaigns_dir)]
    raise NotFound(not_found_message("newsletter", name, names, campaigns_dir / NEWSLETTERS_FOLDER))


def list_newsletters(campaigns_dir: Path) -> list[Path]:
    folder = campaigns_dir / NEWSLETTERS_FOLDER
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def referenced_campaigns(
    newsletter: Newsletter, campaigns_dir: Path, templates_dir: Path | None, *, base_url: str | None = None
) -> tuple[Campaign, Campaign]:
    """The drip the newsletter is based on and the drip whose segments count (and perhaps choose)
    its audience, after checking every reference the file makes."""
    source = newsletter.source
    for suffix in (".yaml", ".yml"):
        if (campaigns_dir / f"{newsletter.id}{suffix}").is_file():
            # Deliveries carry the id in campaign_id: a drip of the same name would share reports.
            raise CampaignError(f"{source}: id: {newsletter.id!r} is also a drip campaign's name; choose another")
    try:
        based_on = find_campaign(newsletter.based_on, campaigns_dir, base_url=base_url)
    except NotFound:
        raise CampaignError(f"{source}: based_on: no campaign {newsletter.based_on!r} in {campaigns_dir}") from None
    counted = based_on
    audience = newsletter.audience
    if audience.segments_campaign and audience.segments_campaign != based_on.id:
        try:
            counted = find_campaign(audience.segments_campaign, campaigns_dir, base_url=base_url)
        except NotFound:
            message = f"audience.segments.campaign: no campaign {audience.segments_campaign!r}"
            raise CampaignError(f"{source}: {message}") from None
    known = {segment.id for segment in counted.segments}
    for index, segment_id in enumerate(audience.segments):
        if segment_id not in known:
            raise CampaignError(
                f"{source}: audience.segments.include.{index}: {counted.id!r} has no segment {segment_id!r} "
                f"(it has {', '.join(sorted(known))})"
            )
    if (
        newsletter.template is not None
        and templates_dir is not None
        and not (templates_dir / newsletter.template).is_file()
    ):
        raise CampaignError(f"{source}: template: no template {newsletter.template!r} in {templates_dir}")
    return based_on, counted


def is_newsletter(name: str, campaigns_dir: Path) -> bool:
    """Whether `name` (a name or a file's path) means a newsletter rather than a drip: a file
    with ``kind: newsletter``, or a name found only among the newsletters."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        try:
            data = yaml.safe_load(candidate.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            return candidate.parent.name == NEWSLETTERS_FOLDER
        return isinstance(data, dict) and data.get("kind") == "newsletter"
    if not _ID.match(name) or any((campaigns_dir / f"{name}{s}").is_file() for s in (".yaml", ".yml")):
        return False
    return any((campaigns_dir / NEWSLETTERS_FOLDER / f"{name}{s}").is_file() for s in (".yaml", ".yml"))
