"""The campaigns a process knows about, loaded from ``campaigns/`` and reloaded when a file
changes, so a long-running worker picks up edits without a restart."""

from __future__ import annotations

import re
from pathlib import Path

from cadence.core.campaign import Campaign
from cadence.errors import NotFound
from cadence.files.campaigns import _ID, SENDER_FILE_NAME, find_campaign, list_campaigns, not_found_message


class CampaignCatalog:
    def __init__(
        self,
        campaigns_dir: Path,
        templates_dir: Path | None = None,
        *,
        base_url: str | None = None,
        sender_file: Path | None = None,
    ) -> None:
        self.campaigns_dir = campaigns_dir
        self.sender_file = sender_file  # None: sender.yaml beside the campaigns
        self.templates_dir = templates_dir
        self.base_url = base_url  # where guide: and site: links point (CADENCE_BASE_URL when sending)
        self._cache: dict[str, tuple[float, Campaign]] = {}

    def get(self, campaign_id: str) -> Campaign:
        """The campaign named `campaign_id`; NotFound if its file is gone."""
        path = self._path(campaign_id)
        # An edit of the sender file (which every campaign reads) reloads them too.
        sender = self.sender_file or self.campaigns_dir / SENDER_FILE_NAME
        mtime = max(path.stat().st_mtime, sender.stat().st_mtime if sender.is_file() else 0.0)
        cached = self._cache.get(campaign_id)
        if cached and cached[0] == mtime:
            return cached[1]
        campaign = find_campaign(
            campaign_id, self.campaigns_dir, self.templates_dir, base_url=self.base_url, sender_file=self.sender_file
        )
        self._cache[campaign_id] = (mtime, campaign)
        return campaign

    def all(self) -> list[Campaign]:
        return [self.get(path.stem) for path in list_campaigns(self.campaigns_dir)]

    def _path(self, campaign_id: str) -> Path:
        # A name from a form or URL ("../../x", "/abs/path.yaml") must not reach the file
        # system: an editor could test whether any .yaml file on the machine exists, or load an
        # absolute path as a campaign (Path / "/abs" is "/abs"; hostile review).
        if not re.match(_ID, campaign_id):
            raise NotFound(f"no campaign {campaign_id!r}: names are lowercase letters, digits, - and _")
        for suffix in (".yaml", ".yml"):
            path = self.campaigns_dir / f"{campaign_id}{suffix}"
            if path.is_file():
                return path
        names = [path.stem for path in list_campaigns(self.campaigns_dir)]
        raise NotFound(not_found_message("campaign", campaign_id, names, self.campaigns_dir))
