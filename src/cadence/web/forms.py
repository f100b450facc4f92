"""What subscribers send us, parsed: the address and name of every signup, and the answers to a
form's questions (which questions is the form file's business: ``campaigns/forms/*.yaml``,
:mod:`cadence.core.signup_forms`). Shared by the pages and the JSON API.

For the API, :func:`answers_model` turns a form's questions into a pydantic model, so
``/openapi.json`` documents the exact answers the default form accepts: a choice is an enum, a
yes/no question a boolean, a month ``YYYY-MM``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal, cast

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from cadence.core.message import validate_addr_spec
from cadence.core.signup_forms import MONTH, SignupForm
from cadence.core.subscriber_fields import check_text, normalise_email
from cadence.errors import InputError
from cadence.operations.preferences import PAUSE_WEEKS
from cadence.operations.signup import Answers, SignupData

__all__ = [
    "FIELD_MESSAGES",
    "PAUSE_WEEKS",
    "AnswersModel",
    "Posted",
    "SignupFields",
    "answers_model",
    "check_email",
    "check_first_name",
    "form_values",
    "form_values_text",
    "month_choices",
    "parse_signup",
    "signup_model",
]

# What a person reads next to a field that needs another look (the questions' own messages are
# in the form file).
FIELD_MESSAGES = {
    "email": "Enter an email address like name@example.com.",
    "first_name": "Your first name can be at most 100 characters, on one line.",
}


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


def parse_signup(form: SignupForm, values: Mapping[str, str]) -> SignupData | dict[str, str]:
    """The signup, or a message per bad field (every field is checked, not just the first)."""
    errors: dict[str, str] = {}
    email = first_name = ""
    try:
        email = check_email(values.get("email", ""))
    except InputError:
        errors["email"] = FIELD_MESSAGES["email"]
    try:
        first_name = check_first_name(values.get("first_name", ""))
    except InputError as exc:
        # Say what is wrong (an invisible character, its code point; never the text itself).
        errors["first_name"] = f"Your first name {str(exc).partition(': ')[2]}."
    attributes, answer_errors = form.check_answers(values)
    errors.update(answer_errors)
    if errors:
        return errors
    return SignupData(email, first_name, Answers(attributes))


async def posted_fields(request: Request) -> dict[str, str]:
    """The POSTed form as plain strings: a form's questions are data, so their fields are not
    parameters of the route (Starlette caches the parsed body; the size caps of body_guard.py
    apply before it is read)."""
    return {key: value for key, value in (await request.form()).items() if isinstance(value, str)}


# A route parameter: ``fields: Posted``.
Posted = Annotated[dict[str, str], Depends(posted_fields)]


def month_choices(now: datetime, count: int = 18) -> list[tuple[str, str]]:
    """``(YYYY-MM, "April 2027")`` for this month and the next `count` - 1."""
    first = date(now.year, now.month, 1)
    choices = []
    for offset in range(count):
        year, month = divmod(first.month - 1 + offset, 12)
        day = date(first.year + year, month + 1, 1)
        choices.append((day.strftime("%Y-%m"), day.strftime("%B %Y")))
    return choices


# ---------------------------------------------------------------------------- the API's models


class AnswersModel(BaseModel):
    """A form's answers as JSON (the fields come from the form file)."""

    model_config = ConfigDict(extra="forbid")
    form: ClassVar[SignupForm | None] = None

    def form_values(self) -> dict[str, str]:
        """As the strings the HTML form posts (``"yes"``/``"no"``, ``""`` for none)."""
        return {key: form_values_text(value) for key, value in self.model_dump().items()}

    @classmethod
    def stored(cls, attributes: Mapping[str, Any]) -> AnswersModel | None:
        """The answers stored on a subscriber, or None if they never gave (valid) ones."""
        assert cls.form is not None
        values = cls.form.stored_answers(attributes)
        if values is None:
            return None
        data: dict[str, Any] = {}
        for question in cls.form.questions:
            value = values[question.id]
            data[question.id] = (value == "yes") if question.kind == "yes_no" else (value or None)
        return cls(**data)


def form_values_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def model_prefix(form: SignupForm, default: bool) -> str:
    """How `form`'s models are named in the OpenAPI document: ``Answers`` and ``SignupIn`` for
    the default form (the names clients already use), ``ClinicNewsAnswers``... for the others
    (one schema per form: they ask different questions)."""
    return "" if default else "".join(part.capitalize() for part in re.split(r"[-_]", form.name))


def answers_model(form: SignupForm, prefix: str = "") -> type[AnswersModel]:
    """The pydantic model of `form`'s answers (named ``<prefix>Answers`` in the OpenAPI document)."""
    fields: dict[str, Any] = {}
    for question in form.questions:
        description = " ".join(part for part in (question.label, question.help) if part)
        annotation: Any
        if question.kind == "yes_no":
            annotation = bool
        elif question.kind == "month":
            fields[question.id] = (
                str | None,
                Field(
                    default=None, pattern=MONTH.pattern, description=f"{description} (YYYY-MM)", examples=["2027-04"]
                ),
            )
            continue
        else:
            annotation = Literal[tuple(value for value, _ in question.choices)]
        if question.required:
            fields[question.id] = (annotation, Field(description=description))
        else:
            fields[question.id] = (annotation | None, Field(default=None, description=description))
    model: type[AnswersModel] = create_model(f"{prefix}Answers", __base__=AnswersModel, **fields)
    model.form = form
    return model


class SignupFields(BaseModel):
    """What every API signup carries besides the answers. ``consent_version`` must be the
    version of the wording the person was shown (``GET /api/consent``); it is stored with their
    consent record."""

    current_consent: ClassVar[str] = ""
    consent_path: ClassVar[str] = "/api/consent"  # where a client reads this form's wording

    email: str = Field(max_length=320, json_schema_extra={"format": "email"}, examples=["runner@example.com"])
    first_name: str = Field(default="", max_length=100)
    consent_version: str
    page_url: str | None = Field(
        default=None, max_length=500, pattern=r"^https?://", description="The page that showed the form."
    )

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        try:
            return check_email(value)
        except InputError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("consent_version")
    @classmethod
    def _consent_version(cls, value: str) -> str:
        if value != cls.current_consent:
            raise ValueError(f"the current consent wording is {cls.current_consent!r} (GET {cls.consent_path})")
        return value

    @field_validator("first_name")
    @classmethod
    def _first_name(cls, value: str) -> str:
        try:
            return check_first_name(value)
        except InputError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("page_url")
    @classmethod
    def _page_url(cls, value: str | None) -> str | None:
        # Stored in the consent record: no invisible or control characters there either.
        try:
            return None if value is None else check_text(value, "page_url", 500)
        except InputError as exc:
            raise ValueError(str(exc)) from None


def signup_model(
    form: SignupForm, answers: type[AnswersModel], prefix: str = "", consent_path: str = "/api/consent"
) -> type[SignupFields]:
    """The API's signup body for `form`: its answers and :class:`SignupFields`."""
    version = form.consent.version
    model = cast(
        type[SignupFields],
        create_model(
            f"{prefix}SignupIn",
            __base__=(answers, SignupFields),
            consent_version=(str, Field(json_schema_extra={"enum": [version]})),
        ),
    )
    model.current_consent = version
    model.consent_path = consent_path
    return model


def form_values(body: BaseModel, answers: type[AnswersModel]) -> dict[str, str]:
    """The answers of an API body as the strings the HTML form posts."""
    return {key: form_values_text(getattr(body, key)) for key in answers.model_fields}
