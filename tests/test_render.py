"""Two-phase rendering: the real campaign, the compile cache, escaping, the sandbox, links, errors."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
import pytest

from cadence.core.campaign import Campaign, Segment, Step, Tracking
from cadence.core.message import Address, OutgoingMessage, build_mime
from cadence.core.render import CompiledVariant, Renderer, compile_variant, render_email
from cadence.core.render_html import ascii_html, wrap_long_lines
from cadence.errors import TemplateError
from tests.support.course import JORDAN, LINKS, course_campaign, course_renderer

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    return course_campaign()


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return course_renderer()


def demo_campaign(context: dict[str, Any] | None = None, segments: tuple[Segment, ...] | None = None) -> Campaign:
    clinic = {"name": "Demo Clinic", "postal_address": "1 Main St", "website": "https://clinic.example"}
    return Campaign(
        id="demo",
        name="Demo & course",
        sender_name="Demo Clinic",
        sender_email="care@clinic.example",
        timezone="UTC",
        segments=segments or (Segment("all", "Everyone", fallback=True),),
        steps=(Step("one", "demo/01.mjml", timedelta()),),
        context=context if context is not None else {"clinic": clinic},
        tracking=Tracking(utm={"utm_source": "cadence", "utm_medium": "email"}),
    )


LAYOUT = """<mjml><mj-head><mj-title>{% block subject %}Hello{% endblock %}</mj-title>
<mj-preview>{% block preheader %}Preview &amp; more{% endblock %}</mj-preview></mj-head>
<mj-body><mj-section><mj-column><mj-text>
{% block body %}{% endblock %}
<p>{{ clinic.postal_address }} <a href="[[ links.unsubscribe ]]">Unsubscribe</a></p>
</mj-text></mj-column></mj-section></mj-body></mjml>"""


def dict_renderer(step_source: str, **more: str) -> tuple[Renderer, dict[str, str]]:
    mapping = {"layout.mjml": LAYOUT, "demo/01.mjml": step_source, **more}
    return Renderer(jinja2.DictLoader(mapping)), mapping


def render_demo(step_source: str, subscriber: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    renderer, _ = dict_renderer(step_source)
    campaign = demo_campaign(kwargs.pop("context", None))
    variant = renderer.variant(campaign, campaign.steps[0], campaign.segments[0])
    return variant, render_email(variant, subscriber=subscriber or JORDAN, links=LINKS, **kwargs)


# --- the real campaign -----------------------------------------------------------------------


def test_subscribers_without_a_first_name_are_greeted_generically(campaign: Campaign, renderer: Renderer) -> None:
    variant = renderer.variant(campaign, campaign.steps[0], campaign.segments[0])
    email = render_email(variant, subscriber={**JORDAN, "first_name": ""}, links=LINKS)
    assert "Hi there," in email.text and "Hi ," not in email.text


def test_clinic_links_get_utm_parameters_and_tracked_urls_replace_them_in_html_and_text(
    campaign: Campaign, renderer: Renderer
) -> None:
    variant = renderer.variant(campaign, campaign.steps[1], campaign.segments[0])
    assert variant.links, "the email has links to track"
    for url in variant.links:
        if url.startswith("https://example.invalid/guide/"):
            # The guide pages Cadence serves itself (issue 11): tracked by the click tracker
            # below, not tagged for the clinic site's analytics.
            assert "utm_" not in url
            continue
        assert url.startswith("https://precisionbodywork.example/")
        assert "utm_source=cadence&utm_medium=email&utm_campaign=lower-back-pain" in url
    seen: list[tuple[int, str]] = []

    def track(index: int, url: str) -> str:
        seen.append((index, url))
        return f"https://t.example/c/{index}"

    email = render_email(variant, subscriber=JORDAN, links=LINKS, link_url=track)
    assert seen == list(enumerate(variant.links))
    for index in range(len(variant.links)):
        assert f'href="https://t.example/c/{index}"' in email.html
        assert f"https://t.example/c/{index}" in email.text
    assert "precisionbodywork.example/runners" not in email.html  # every clinic link is tracked
    # Unsubscribe, preferences and web view are neither tracked nor tagged.
    for url in LINKS.values():
        assert f'href="{url}"' in email.html and url in email.text


def test_the_text_part_is_readable_and_keeps_every_link(campaign: Campaign, renderer: Renderer) -> None:
    variant = renderer.variant(campaign, campaign.steps[1], campaign.segments[2])
    email = render_email(variant, subscriber=JORDAN, links=LINKS)
    assert "<" not in email.text.replace("<3", "")
    assert "&rsquo;" not in email.text and "&nbsp;" not in email.text
    assert email.text.startswith(variant.preheader_source + "\n\n")  # the visible preheader leads
    html_links = set(re.findall(r'href="(https://[^"]+)"', email.html))
    for url in html_links:
        assert url.replace("&amp;", "&") in email.text
    assert re.search(r"\S \(https://example\.invalid/guide/", email.text), "links read as 'label (url)'"


# --- the compile cache -----------------------------------------------------------------------


class CountingLoader(jinja2.DictLoader):
    def __init__(self, mapping: dict[str, str]) -> None:
        super().__init__(mapping)
        self.calls = 0

    def get_source(self, environment: jinja2.Environment, template: str) -> Any:
        self.calls += 1
        return super().get_source(environment, template)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


STEP = '{% extends "layout.mjml" %}{% block subject %}First version{% endblock %}{% block body %}<p>x</p>{% endblock %}'


def test_variants_are_compiled_once_and_then_served_from_the_cache() -> None:
    loader = CountingLoader({"layout.mjml": LAYOUT, "demo/01.mjml": STEP})
    clock = FakeClock()
    renderer = Renderer(loader, check_interval=3.0, clock=clock)
    campaign = demo_campaign()
    first = renderer.variant(campaign, campaign.steps[0], campaign.segments[0])
    calls = loader.calls
    for _ in range(100):
        assert renderer.variant(campaign, campaign.steps[0], campaign.segments[0]) is first
    assert loader.calls == calls, "no template is loaded again within the check interval"
    reloaded = demo_campaign()  # an equal campaign loaded again from its file
    assert renderer.variant(reloaded, reloaded.steps[0], reloaded.segments[0]) is first
    other = demo_campaign({"clinic": {"postal_address": "2 Other St", "website": "https://clinic.example"}})
    assert renderer.variant(other, other.steps[0], other.segments[0]).content_hash != first.content_hash


def test_edited_templates_are_picked_up_after_the_check_interval() -> None:
    loader = CountingLoader({"layout.mjml": LAYOUT, "demo/01.mjml": STEP})
    clock = FakeClock()
    renderer = Renderer(loader, check_interval=3.0, clock=clock)
    campaign = demo_campaign()
    step, segment = campaign.steps[0], campaign.segments[0]
    first = renderer.variant(campaign, step, segment)
    loader.mapping["demo/01.mjml"] = STEP.replace("First version", "Second version")
    clock.now += 1
    assert renderer.variant(campaign, step, segment) is first, "not re-checked before the interval"
    clock.now += 3
    second = renderer.variant(campaign, step, segment)
    assert second.subject_source == "Second version" and second.content_hash != first.content_hash
    clock.now += 10
    assert renderer.variant(campaign, step, segment) is second, "unchanged templates are not recompiled"
    # A segment override that appears later is used from then on.
    loader.mapping["demo/segments/all/01.mjml"] = STEP.replace("First version", "For everyone")
    clock.now += 10
    assert renderer.variant(campaign, step, segment).subject_source == "For everyone"


def test_compile_variant_without_a_cache_gives_the_same_result(campaign: Campaign, renderer: Renderer) -> None:
    step, segment = campaign.steps[2], campaign.segments[1]
    cached = renderer.variant(campaign, step, segment)
    fresh: CompiledVariant = compile_variant(renderer.loader, campaign, step, segment)
    assert fresh.content_hash == cached.content_hash and fresh.html_source == cached.html_source


# --- escaping and the sandbox -----------------------------------------------------------------


def test_subscriber_values_are_escaped_in_html_and_literal_in_text_and_subject() -> None:
    step = (
        '{% extends "layout.mjml" %}{% block subject %}For [[ subscriber.first_name ]]{% endblock %}'
        "{% block body %}<p>Hi [[ subscriber.first_name ]] ([[ subscriber.attributes.city ]])</p>{% endblock %}"
    )
    person = {"first_name": XSS, "email": "x@example.com", "attributes": {"city": "R&D <b>"}}
    _, email = render_demo(step, person)
    assert XSS not in email.html and "&lt;img src=x onerror=alert(1)&gt;" in email.html
    assert "R&amp;D &lt;b&gt;" in email.html
    assert f"Hi {XSS} (R&D <b>)" in email.text
    assert email.subject == f"For {XSS}"


def test_a_first_name_with_a_line_break_cannot_add_headers_through_the_subject() -> None:
    step = '{% extends "layout.mjml" %}{% block subject %}Hi [[ subscriber.first_name ]]{% endblock %}'
    _, email = render_demo(step, {**JORDAN, "first_name": "Jo\r\nBcc: all@example.com"})
    assert "\n" not in email.subject and "\r" not in email.subject


@pytest.mark.parametrize("expression", ["{{ ''.__class__.__mro__ }}", "[[ ''.__class__.__mro__ ]]"])
def test_the_sandbox_refuses_python_internals_in_both_phases(expression: str) -> None:
    step = '{% extends "layout.mjml" %}{% block body %}\n<p>\n' + expression + "</p>{% endblock %}"
    with pytest.raises(TemplateError) as caught:
        render_demo(step)
    assert caught.value.template == "demo/01.mjml" and caught.value.line == 3
    assert "unsafe" in str(caught.value) and str(caught.value).startswith("demo/01.mjml:3: ")


def test_a_missing_variable_names_the_template_and_line_in_phase_1() -> None:
    step = '{% extends "layout.mjml" %}\n{% block body %}\n<p>{{ clinic.fax }}</p>\n{% endblock %}'
    with pytest.raises(TemplateError) as caught:
        render_demo(step)
    assert (caught.value.template, caught.value.line) == ("demo/01.mjml", 3)
    assert "fax" in str(caught.value)


def test_a_missing_variable_names_the_template_and_line_in_phase_2() -> None:
    step = '{% extends "layout.mjml" %}\n{% block body %}\n\n<p>[[ subscriber.nickname ]]</p>\n{% endblock %}'
    with pytest.raises(TemplateError) as caught:
        render_demo(step)
    assert (caught.value.template, caught.value.line) == ("demo/01.mjml", 4)
    assert "nickname" in str(caught.value)


def test_a_missing_template_and_broken_mjml_are_template_errors() -> None:
    with pytest.raises(TemplateError, match=r"template not found: nowhere\.mjml"):
        render_demo('{% extends "layout.mjml" %}{% block body %}{% include "nowhere.mjml" %}{% endblock %}')
    with pytest.raises(TemplateError, match="MJML error") as caught:
        render_demo('{% extends "layout.mjml" %}{% block body %}\n<mj-column>{% endblock %}')
    assert caught.value.template == "demo/01.mjml"


# --- phase boundaries ------------------------------------------------------------------------


def test_subject_and_preheader_come_from_mj_title_and_mj_preview_unescaped() -> None:
    step = (
        '{% extends "layout.mjml" %}{% block subject %}Hips &amp; backs, '
        '[[ subscriber.first_name or "friend" ]]{% endblock %}'
    )
    variant, email = render_demo(step, {**JORDAN, "first_name": ""})
    assert email.subject == "Hips & backs, friend"
    assert variant.preheader_source == "Preview & more"


def test_phase_2_delimiters_inside_campaign_data_are_printed_not_executed() -> None:
    context = {"clinic": {"postal_address": "[[ subscriber.email ]] St", "website": "https://clinic.example"}}
    _, email = render_demo('{% extends "layout.mjml" %}', context=context)
    assert "[[ subscriber.email ]] St" in email.text and JORDAN["email"] not in email.text


def test_only_links_to_the_clinic_site_get_utm_parameters() -> None:
    step = (
        '{% extends "layout.mjml" %}{% block body %}<p>'
        '<a href="{{ clinic.website }}/guide?utm_source=newsletter#top">guide</a> '
        '<a href="https://www.clinic.example">https://www.clinic.example</a> '
        '<a href="https://elsewhere.example/a?b=1&amp;c=2">elsewhere</a> '
        '<a href="https://clinic.example/unsubscribe">old unsubscribe</a> '
        '<a href="mailto:care@clinic.example">write to us</a></p>{% endblock %}'
    )
    variant, email = render_demo(step)
    assert variant.links == (
        "https://clinic.example/guide?utm_source=newsletter&utm_medium=email#top",
        "https://www.clinic.example/?utm_source=cadence&utm_medium=email",
        "https://elsewhere.example/a?b=1&c=2",
        "https://clinic.example/unsubscribe",
    )
    assert 'href="https://elsewhere.example/a?b=1&amp;c=2"' in email.html
    assert "guide (https://clinic.example/guide?utm_source=newsletter&utm_medium=email#top)" in email.text
    assert "https://www.clinic.example/?utm_source=cadence" in email.text  # a bare URL is not doubled
    assert "write to us (care@clinic.example)" in email.text


def test_quotes_in_the_subject_survive_mjml_copying_it_into_an_attribute() -> None:
    step = (
        '{% extends "layout.mjml" %}{% block subject %}The "hips first" rule, '
        '[[ subscriber.first_name or "friend" ]]{% endblock %}'
    )
    _, email = render_demo(step, {**JORDAN, "first_name": 'Jo "JJ"'})
    assert email.subject == 'The "hips first" rule, Jo "JJ"'
    label = re.search(r'<div aria-label="([^"]*)"', email.html)
    assert label is not None and label.group(1) == "The &quot;hips first&quot; rule, Jo &#34;JJ&#34;"


def test_wrapping_breaks_only_between_attributes_and_after_blocks() -> None:
    line = (
        '<table border="0" cellpadding="0" role="presentation"><tbody><tr><td style="a:b">'
        + "<p>Hi Jordan, a sentence that must stay whole on its line.</p>" * 6
        + '<a href="https://example.com/x" style="color:red" target="_blank">Book</a></td></tr></tbody></table>'
    )
    wrapped = wrap_long_lines(line, 80)
    parts = wrapped.split("\n")
    assert len(parts) > 5 and max(map(len, parts)) <= 80
    assert wrapped.count("Hi Jordan, a sentence that must stay whole on its line.") == 6
    # every break either replaced the space before an attribute or follows a block's end
    for before, after in itertools.pairwise(parts):
        assert (re.search(r'"$', before) and re.match(r"[a-z-]+=", after)) or re.search(r"</?\w+>$", before)
    rejoined = "".join(p if re.search(r"</?\w+>$", p) else p + " " for p in parts).rstrip()
    assert rejoined == line
    assert wrap_long_lines("<p>" + "word " * 300 + "</p>", 80).count("\n") == 0  # no safe place


def test_non_ascii_html_becomes_character_references_except_where_they_would_not_be_read() -> None:
    source = '<style>p::before{content:"→"}</style><p title="Zoë’s">It’s [[ name or "Zoë" ]]</p>'
    assert ascii_html(source) == (
        '<style>p::before{content:"→"}</style><p title="Zo&#235;&#8217;s">It&#8217;s [[ name or "Zoë" ]]</p>'
    )
    assert ascii_html("<p>plain</p>") == "<p>plain</p>"


def test_a_subject_with_only_a_phase2_comment_is_still_rendered() -> None:
    step = '{% extends "layout.mjml" %}{% block subject %}Week 2 [# A/B test: variant B #]{% endblock %}'
    variant, email = render_demo(step + "{% block body %}<p>Hi</p>{% endblock %}")
    assert not variant.static_subject and email.subject == "Week 2"
    _, plain = render_demo('{% extends "layout.mjml" %}{% block subject %}Hips & backs{% endblock %}')
    assert plain.subject == "Hips & backs"


def test_the_preheader_is_the_visible_first_line_with_nothing_hidden(campaign: Campaign, renderer: Renderer) -> None:
    """Hidden text is what filters score: rspamd's MANY_INVISIBLE_PARTS (display:none), and
    SpamAssassin's HTML_FONT_LOW_CONTRAST (0.7) for the white text MJML gives the hidden div."""
    variant = renderer.variant(campaign, campaign.steps[0], campaign.segments[0])
    preheader = re.escape(variant.preheader_source[:20])
    body = variant.html_source[variant.html_source.index("<body") :]
    first_text = re.search(r">\s*([^<\s][^<]*)<", body)
    assert first_text is not None and re.match(preheader, first_text.group(1))  # the inbox preview
    style = re.search(r'<p class="cd-preheader"\s+style="([^"]*)">' + preheader, variant.html_source)
    assert style is not None
    assert "display:none" not in body and "opacity:0" not in body and "color:#ffffff" not in style.group(1)
    assert ".cd-preheader { color: #b9c2c8" in variant.html_source  # readable in dark mode


def test_every_email_of_the_campaign_has_a_7bit_html_part(campaign: Campaign, renderer: Renderer) -> None:
    for step in campaign.steps:
        for segment in campaign.segments:
            email = render_email(
                renderer.variant(campaign, step, segment),
                subscriber={"first_name": "Zoë", "email": "zoe@example.com", "attributes": {}},
                links=LINKS,
                link_url=lambda i, u: f"https://cadence.example/c/123456/{i}/abcdefghijklmnop",
            )
            assert email.html.isascii() and "Zo&#235;" in email.html
            message = OutgoingMessage(
                sender=Address("care@example.com"),
                to=Address("zoe@example.com"),
                subject=email.subject,
                html=email.html,
                text=email.text,
                message_id="<d1.x@example.com>",
            )
            raw = build_mime(message, date=datetime(2026, 1, 5, tzinfo=UTC))
            html_headers = raw.split(b"Content-Type: text/html", 1)[1][:80]
            assert b"Content-Transfer-Encoding: 7bit" in html_headers, (step.id, segment.id)
            # The text part spells typography in ASCII, so it goes 7bit too (except a name like Zoë).
            assert email.text.replace("Zoë", "Zoe").isascii(), (step.id, segment.id)
            assert "’" not in email.text and "'" in email.text
