"""The sender's details (who is writing: name, postal address, phone, booking page) and the
newsletter topics they offer, from ONE settings file (``campaigns/sender.yaml``, issue 12).

Emails read them as ``{{ clinic.* }}`` (a campaign file may still override a key in its own
``context.clinic``), the pages print them in their frame, and the transactional emails are sent
from ``email``. The postal address is required: commercial email must carry the sender's valid
physical postal address (CAN-SPAM, 15 U.S.C. 7704(a)(5)(A)(iii)).

Pure: :func:`sender_from_text` parses the text it is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError

from cadence.core.signup_forms import describe_error
from cadence.errors import CampaignError

_TOPIC = r"^[a-z0-9][a-z0-9_-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicModel(_Model):
    name: str = Field(min_length=1)
    description: str = ""


class SenderModel(_Model):
    name: str = Field(min_length=1)
    postal_address: str = Field(
        min_length=5, description="Required in every commercial email (CAN-SPAM 15 U.S.C. 7704(a)(5))."
    )
    city: str = ""
    phone: str = ""
    website: str = ""
    booking_url: str = ""
    logo_url: str = ""
    email: EmailStr
    reply_to: EmailStr | None = None
    topics: dict[str, TopicModel] = Field(default_factory=dict)


# The keys that become ``{{ clinic.* }}`` in templates and ``clinic`` in the pages.
CLINIC_KEYS = ("name", "city", "postal_address", "phone", "website", "booking_url", "logo_url")


@dataclass(frozen=True)
class Topic:
    id: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class Sender:
    name: str
    postal_address: str
    email: str
    reply_to: str | None = None
    city: str = ""
    phone: str = ""
    website: str = ""
    booking_url: str = ""
    logo_url: str = ""
    topics: dict[str, Topic] = field(default_factory=dict)
    source: str = ""

    def clinic(self) -> dict[str, str]:
        """The details as the ``clinic`` mapping templates and pages read (empty keys left out,
        so ``{% if clinic.phone %}`` reads naturally)."""
        return {key: value for key in CLINIC_KEYS if (value := str(getattr(self, key)))}


def sender_from_text(text: str, source: str) -> Sender:
    """The sender file's text as a :class:`Sender`; CampaignError names file, line and field."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise CampaignError(f"{source}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise CampaignError(f"{source}: expected a mapping at the top level")
    try:
        model = SenderModel.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if err["type"] == "missing" and list(err["loc"]) == ["postal_address"]:
                # CAN-SPAM, 15 U.S.C. 7704(a)(5)(A)(iii): say why, not only that it is missing.
                err = {**err, "msg": "is missing, and every commercial email must carry your postal address (CAN-SPAM)"}
            lines.append(describe_error(err, source, text))
        raise CampaignError("\n".join(lines)) from None
    for topic_id in model.topics:
        if not re.match(_TOPIC, topic_id):
            raise CampaignError(f"{source}: topics.{topic_id}: topic ids use a-z, 0-9, - and _")
    return Sender(
        name=model.name,
        postal_address=model.postal_address,
        email=str(model.email),
        reply_to=str(model.reply_to) if model.reply_to else None,
        city=model.city,
        phone=model.phone,
        website=model.website,
        booking_url=model.booking_url,
        logo_url=model.logo_url,
        topics={key: Topic(key, t.name, t.description) for key, t in model.topics.items()},
        source=source,
    )
