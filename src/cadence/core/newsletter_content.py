"""What a newsletter looks like: its file rendered in the newsletter layout, and the locked version.

A newsletter is rendered by the same two-phase renderer as a drip step (core/render.py), as a
one-step "campaign" whose only template is :data:`ISSUE_TEMPLATE`: a small wrapper that extends
the newsletter layout (``_shared/newsletter.mjml``, whose masthead has no "lesson n of m") with
the file's Markdown body, or extends the file's own MJML template, and fills the subject and
preheader. Footer, disclaimer and unsubscribe links come from the shared base, as for drips.

Once scheduled, the newsletter is *locked*: the phase-1 output (MJML, with the per-subscriber
``[[ ]]`` markup still in it) and what phase 2 needs is stored with the newsletter, and every
copy is rendered from that, so editing a file afterwards never changes what goes out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup

from cadence.core.campaign import Campaign, Segment, Step, Tracking
from cadence.core.newsletter import Newsletter, issue_label
from cadence.core.render import CompiledVariant, compile_variant
from cadence.errors import TemplateError

__all__ = [
    "EVERYONE",
    "ISSUE_TEMPLATE",
    "lock",
    "locked_campaign",
    "locked_variant",
    "newsletter_loader",
    "render_campaign",
]

ISSUE_TEMPLATE = "_newsletter/issue.mjml"
_LOCKED_TEMPLATE = "_newsletter/locked.mjml"
LAYOUT = "_shared/newsletter.mjml"
EVERYONE = Segment("everyone", "Everyone", fallback=True)

# Each block keeps the layout's (or the issue template's) own text unless the file gives one.
_ISSUE_SOURCE = """{% extends newsletter.extends %}
{% block issue_date %}
{%- if newsletter.issue_date %}{{ newsletter.issue_date }}{% else %}{{ super() }}{% endif -%}
{% endblock %}
{% block subject %}
{%- if newsletter.subject %}{{ newsletter.subject }}{% else %}{{ super() }}{% endif -%}
{% endblock %}
{% block preheader %}
{%- if newsletter.preheader %}{{ newsletter.preheader }}{% else %}{{ super() }}{% endif -%}
{% endblock %}
{% block content %}{% if newsletter.body_html %}<mj-text css-class="cd-text" padding="8px 28px 0px">
{{ newsletter.body_html }}
</mj-text>{% else %}{{ super() }}{% endif %}{% endblock %}
{% block cta %}{% if newsletter.cta_url %}
{%- call ui.cta(newsletter.cta_url, newsletter.cta_label) %}{% endcall -%}
{% else %}{{ super() }}{% endif %}{% endblock %}
"""

# CommonMark with raw HTML off, as the guide pages: a "<script>" in a body is shown as text.
_MD = MarkdownIt("commonmark", {"html": False, "typographer": False})


def newsletter_loader(templates: jinja2.BaseLoader) -> jinja2.BaseLoader:
    """The templates directory plus the issue wrapper."""
    return jinja2.ChoiceLoader([jinja2.DictLoader({ISSUE_TEMPLATE: _ISSUE_SOURCE}), templates])


def _body_html(markdown: str) -> Markup:
    """The Markdown body as HTML. It is literal text for phase 2 as well: it reaches the
    renderer as campaign data, whose ``[[``, ``[%`` and ``[#`` core/render.py's ``_shield``
    wraps in raw blocks, so a body cannot run per-subscriber code. (Wrapping them here too
    wrapped them twice, and readers saw "[% raw %]" in the email.)"""
    return Markup(_MD.render(markdown))


def render_campaign(newsletter: Newsletter, based_on: Campaign, scheduled_at: datetime) -> Campaign:
    """The one-step campaign the renderer compiles for `newsletter` (sender, clinic details and
    tracking from `based_on`; ``utm_campaign`` is the newsletter's id)."""
    values: dict[str, Any] = {
        "extends": newsletter.template or LAYOUT,
        "issue_date": newsletter.issue_date or issue_label(newsletter.send_time, scheduled_at),
        "subject": newsletter.subject or "",
        "preheader": newsletter.preheader or "",
        "body_html": _body_html(newsletter.body) if newsletter.body else "",
        "cta_url": newsletter.cta_url or "",
        "cta_label": newsletter.cta_label or "",
    }
    utm = {**based_on.tracking.utm, "utm_campaign": newsletter.id} if based_on.tracking.utm else {}
    return Campaign(
        id=newsletter.id,
        name=newsletter.name,
        sender_name=based_on.sender_name,
        sender_email=based_on.sender_email,
        reply_to=based_on.reply_to,
        timezone=newsletter.timezone or based_on.timezone,
        segments=(EVERYONE,),
        steps=(Step(newsletter.id, ISSUE_TEMPLATE, timedelta()),),
        context={**based_on.context, **newsletter.context, "newsletter": values},
        tracking=replace(based_on.tracking, utm=utm),
        source=newsletter.source,
    )


def lock(campaign: Campaign, variant: CompiledVariant) -> tuple[str, dict[str, Any]]:
    """(content hash, locked content) of a compiled newsletter: everything its copies need."""
    if "{% endraw %}" in variant.mjml:
        raise TemplateError(
            "the newsletter's text contains '{% endraw %}', which cannot be stored", template=variant.template
        )
    clinic = campaign.context.get("clinic")
    content: dict[str, Any] = {
        "mjml": variant.mjml,
        "name": campaign.name,
        "sender_name": campaign.sender_name,
        "sender_email": campaign.sender_email,
        "reply_to": campaign.reply_to,
        "timezone": campaign.timezone,
        "website": clinic.get("website") if isinstance(clinic, dict) else None,
        "opens": campaign.tracking.opens,
        "clicks": campaign.tracking.clicks,
        "utm": dict(campaign.tracking.utm),
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return digest, content


def locked_campaign(newsletter_id: str, content: dict[str, Any]) -> Campaign:
    """The campaign a locked newsletter's copies are rendered and addressed with."""
    website = content.get("website")
    return Campaign(
        id=newsletter_id,
        name=str(content["name"]),
        sender_name=str(content["sender_name"]),
        sender_email=str(content["sender_email"]),
        reply_to=content.get("reply_to"),
        timezone=str(content["timezone"]),
        segments=(EVERYONE,),
        steps=(Step(newsletter_id, _LOCKED_TEMPLATE, timedelta()),),
        context={"clinic": {"website": website}} if website else {},
        tracking=Tracking(bool(content["opens"]), bool(content["clicks"]), dict(content["utm"])),
    )


_VARIANTS: dict[str, tuple[Campaign, CompiledVariant]] = {}  # content hash -> compiled (per process)


def locked_variant(newsletter_id: str, content_hash: str, content: dict[str, Any]) -> tuple[Campaign, CompiledVariant]:
    """The locked version compiled once per process (MJML → HTML, then the phase-2 templates);
    the stored phase-1 output goes through phase 1 again as raw text, untouched."""
    found = _VARIANTS.get(content_hash)
    if found is not None:
        return found
    campaign = locked_campaign(newsletter_id, content)
    source = "{% raw %}" + str(content["mjml"]) + "{% endraw %}"
    variant = compile_variant(jinja2.DictLoader({_LOCKED_TEMPLATE: source}), campaign, campaign.steps[0], EVERYONE)
    if len(_VARIANTS) > 64:  # a long-running worker: old newsletters
        _VARIANTS.clear()
    _VARIANTS[content_hash] = (campaign, variant)
    return campaign, variant
