"""What subscribers send us: the signup answers and their validation, shared by pages and API.

The answers become subscriber attributes that the campaign's facets read at send time
(``campaigns/lower-back-pain.yaml``: ``terrain eq trails`` → trail, else everyday; and
``training_for_race`` with ``race_month`` → race-soon, race or no-race). Values are stored as
the strings a CSV import would carry (``"yes"``/``"no"``), so imported and self-registered
subscribers look alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cadence.core.message import validate_addr_spec
from cadence.errors import InputError
from cadence.subscribers import check_text, normalise_email

Terrain = Literal["trails", "roads", "treadmill", "mixed"]
TERRAINS: dict[str, str] = {
    "trails": "Trails",
    "roads": "Roads and paths",
    "treadmill": "Treadmill",
    "mixed": "A mix",
}
PAUSE_WEEKS = (2, 4, 8)
# What a person reads next to a field that needs another look.
FIELD_MESSAGES = {
    "email": "Enter an email address like name@example.com.",
    "first_name": "Your first name can be at most 100 characters, on one line.",
    "terrain": "Choose where you run most.",
    "training_for_race": "Tell us whether you are training for a race.",
    "race_month": "Choose a month from the list, or leave it empty.",
}
MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class Answers(BaseModel):
    """The segment questions. ``race_month`` (``YYYY-MM``) only counts when training for a race."""

    model_config = ConfigDict(extra="forbid")

    terrain: Terrain = Field(description="Where they run most: trails, roads (and paths), treadmill or a mix.")
    training_for_race: bool = Field(description="Training for a race?")
    race_month: str | None = Field(
        default=None,
        pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
        description="Roughly when the race is, as YYYY-MM (optional).",
        examples=["2027-04"],
    )

    def attributes(self) -> dict[str, str]:
        """As subscriber attributes (``race_month`` is empty when not training for a race)."""
        month = self.race_month if self.training_for_race and self.race_month else ""
        return {
            "terrain": self.terrain,
            "training_for_race": "yes" if self.training_for_race else "no",
            "race_month": month,
        }

    @classmethod
    def stored(cls, attributes: dict[str, Any]) -> Answers | None:
        """The answers stored on a subscriber, or None if they never gave (valid) ones."""
        from cadence.core.segments import is_truthy

        terrain = str(attributes.get("terrain") or "")
        if terrain not in TERRAINS:
            return None
        month = str(attributes.get("race_month") or "")
        return cls(
            terrain=terrain,  # checked against TERRAINS above
            training_for_race=is_truthy(attributes.get("training_for_race")),
            race_month=month if MONTH.match(month) else None,
        )


@dataclass(frozen=True)
class SignupData:
    """A validated signup: a mailable address, an optional first name, the answers."""

    email: str
    first_name: str
    answers: Answers


def check_email(raw: str) -> str:
    """A normalised address we can actually send to, or InputError naming the field.

    email-validator accepts internationalised local parts; our MIME writer cannot send them
    (no SMTPUTF8, RFC 6531), so we refuse them here rather than accept a signup we cannot
    confirm.
    """
    if len(raw) > 320:
        raise InputError("email: longer than 320 characters")
    try:
        email = normalise_email(raw)
        validate_addr_spec("email", email)
    except InputError:
        # normalise_email quotes the address for staff (CSV lines); a reply to the public never
        # repeats what was sent (issue 10).
        raise InputError("email: not a valid email address like name@example.com") from None
    return email


def check_first_name(raw: str) -> str:
    return check_text(raw, "first_name", 100)


def parse_answers(terrain: str, training_for_race: str, race_month: str) -> Answers:
    """Answers from HTML form strings; InputError names the first bad field."""
    if terrain not in TERRAINS:
        raise InputError("terrain: choose where you run most")
    if training_for_race not in ("yes", "no"):
        raise InputError("training_for_race: answer yes or no")
    month = race_month.strip() or None
    if month is not None and not MONTH.match(month):
        raise InputError("race_month: choose a month from the list")
    return Answers(terrain=terrain, training_for_race=training_for_race == "yes", race_month=month)


def month_choices(now: datetime, count: int = 18) -> list[tuple[str, str]]:
    """``(YYYY-MM, "April 2027")`` for this month and the next `count` - 1."""
    first = date(now.year, now.month, 1)
    choices = []
    for offset in range(count):
        year, month = divmod(first.month - 1 + offset, 12)
        day = date(first.year + year, month + 1, 1)
        choices.append((day.strftime("%Y-%m"), day.strftime("%B %Y")))
    return choices
