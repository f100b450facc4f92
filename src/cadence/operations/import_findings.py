"""What the campaigns' segment rules make of an import's columns and values, as data and as the
sentences a marketer reads: ``cadence subscribers import`` prints them, the staff console shows
them on its check step and on the job page (issue 14 follow-up). One function for both doors, so
the console never says less than the CLI.

The rules themselves are :mod:`cadence.core.column_findings` (pure); this module loads the
campaigns (files/) and words the findings. The sentences are plain text: each door adds its own
markup (rich on a terminal, HTML escaping in the console).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cadence.core.column_findings import CampaignFindings, UnmatchedValues, column_findings, value_findings
from cadence.core.subscriber_csv import Header
from cadence.errors import CadenceError
from cadence.files.catalog import CampaignCatalog

__all__ = ["Finding", "ImportFindings", "import_findings"]

SHOWN_VALUES = 5  # per attribute, in the sentence; the data keeps them all


@dataclass(frozen=True)
class Finding:
    level: str  # "info" (what the segments read) or "warning"
    text: str  # one plain sentence, no markup


@dataclass(frozen=True)
class ImportFindings:
    columns: list[CampaignFindings] = field(default_factory=list)
    unmatched_values: list[UnmatchedValues] = field(default_factory=list)
    warning: str | None = None  # the campaigns could not be read: nothing was checked
    messages: list[Finding] = field(default_factory=list)

    @property
    def warnings(self) -> list[Finding]:
        return [m for m in self.messages if m.level == "warning"]

    def document(self) -> dict[str, Any]:
        """As JSON: the CLI's ``--json`` keys (columns, unmatched_values, warning) and the sentences."""
        return {
            "columns": [asdict(found) for found in self.columns],
            "unmatched_values": [asdict(found) for found in self.unmatched_values],
            "warning": self.warning,
            "messages": [asdict(message) for message in self.messages],
        }


def import_findings(
    header: Header | None,
    values: Mapping[str, Mapping[str, int]],
    *,
    campaigns_dir: Path,
    templates_dir: Path,
    campaign_names: Sequence[str] = (),
) -> ImportFindings:
    """The findings for a file with this `header` and these counted `values` (attribute → value →
    rows, as :class:`cadence.operations.subscriber_import.ImportReport` holds them), against the
    campaigns named (default: every campaign). No header (the file could not be read): none."""
    if header is None:
        return ImportFindings()
    catalog = CampaignCatalog(campaigns_dir, templates_dir)
    try:
        campaigns = [catalog.get(name) for name in campaign_names] if campaign_names else catalog.all()
    except CadenceError as exc:
        warning = f"columns not checked against the campaigns: {exc}"
        return ImportFindings(warning=warning, messages=[Finding("warning", warning)])
    columns = column_findings(header.names, header.fields, campaigns, values)
    unmatched = value_findings(values, campaigns)
    said = [*_column_sentences(columns), *_value_sentences(unmatched)]
    # Warnings first, each on its line; what is only information after them (cold trial: five
    # "stored, but no segment reads it" warnings buried the one column that was misnamed).
    return ImportFindings(columns, unmatched, None, sorted(said, key=lambda m: m.level != "warning"))


def _column_sentences(columns: Sequence[CampaignFindings]) -> list[Finding]:
    said = []
    for found in columns:
        if found.read:
            read = ", ".join(f"{column!r}" + (f" ({a})" if a != column else "") for column, a in found.read)
            said.append(Finding("info", f"{found.campaign}: its segments read {read}"))
        for unused in found.unused:
            if unused.suggestion is not None:
                said.append(
                    Finding(
                        "warning",
                        f"column {unused.column!r} ({unused.attribute}) is not read by any segment of "
                        f"{found.campaign}: did you mean {unused.suggestion.attribute!r}? (the segment rule "
                        f"{unused.suggestion.rule}). As it is, everyone in this file lands in the fallback; "
                        f"rename the column to {unused.suggestion.attribute} and import again",
                    )
                )
        # Extra columns (a phone, notes) are kept on each subscriber: one line says so, not a
        # warning each.
        kept = [u.attribute for u in found.unused if u.suggestion is None]
        if kept:
            said.append(
                Finding("info", f"{found.campaign}: stored as attributes that no segment reads: {', '.join(kept)}")
            )
        for missing in found.missing:
            said.append(
                Finding(
                    "warning",
                    f"no column gives {missing.attribute!r}: new subscribers from this file land in "
                    f"{missing.fallback} for {found.campaign}",
                )
            )
    return said


def _value_sentences(unmatched: Sequence[UnmatchedValues]) -> list[Finding]:
    said = []
    for found in unmatched:
        shown = ", ".join(
            f"{value!r} ({rows:,} row{'s' if rows != 1 else ''})" for value, rows in found.values[:SHOWN_VALUES]
        )
        more = f" and {len(found.values) - SHOWN_VALUES} more" if len(found.values) > SHOWN_VALUES else ""
        said.append(
            Finding(
                "warning",
                f"{found.attribute}: no segment rule of {found.campaign} accepts {shown}{more}; it looks for "
                f"{', '.join(map(repr, found.wanted))}, so those people land in {found.fallback}: fix the values "
                "and import again",
            )
        )
    return said
