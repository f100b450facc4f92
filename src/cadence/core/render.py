"""Two-phase rendering: compile once per (campaign, step, segment), personalise per subscriber.

PHASE 1 (rare, cached): the step template (or its segment override) is rendered by a sandboxed
Jinja with standard delimiters and the campaign/segment/step context, MJML turns the result
into HTML, and three *phase-2 templates* are derived from it: the subject (``<title>``, which
MJML fills from ``<mj-title>``), the HTML, and a plain-text part made once with inscriptis.
Every http(s) link is collected into :attr:`CompiledVariant.links` and replaced by
``[[ _cadence_links[i] ]]``, so click tracking per send is one function call per link.

PHASE 2 (per subscriber, microseconds): the compiled templates are rendered with delimiters
``[[ ]]``, ``[% %]`` and ``[# #]`` and only ``subscriber`` and ``links`` in the context.
Autoescaping is on for HTML and off for the text part and the subject.

The module does no I/O: templates come through the jinja loader the adapter passes in, and the
renderer's clock (for "re-check edited templates at most every few seconds") is injectable.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape
from mjml import mjml2html

from cadence.core.campaign import Campaign, Segment, Step
from cadence.core.render_html import LINKS_VARIABLE, PHASE2_TAG, mjml_error_line, phase2_sources
from cadence.errors import TemplateError

PHASE2_DELIMITERS: dict[str, str] = {
    "variable_start_string": "[[",
    "variable_end_string": "]]",
    "block_start_string": "[%",
    "block_end_string": "%]",
    "comment_start_string": "[#",
    "comment_end_string": "#]",
}


@dataclass(frozen=True, slots=True)
class Phase2Tag:
    """Where a ``[[ ... ]]`` or ``[% ... %]`` tag sits in a source template (for error messages)."""

    template: str
    line: int
    text: str


@dataclass(frozen=True, slots=True, eq=False)
class CompiledVariant:
    """Everything phase 1 produced for one (campaign, step, segment, template version)."""

    campaign_id: str
    step_id: str
    segment_id: str
    template: str  # the entry template: the segment override if there is one, else the step's
    sources: tuple[tuple[str, str], ...]  # (name, source) of every template involved, load order
    content_hash: str
    mjml: str  # phase-1 output
    subject_source: str
    preheader_source: str
    html_source: str
    text_source: str
    links: tuple[str, ...]
    subject_template: jinja2.Template
    static_subject: bool  # subject_source has no phase-2 tag: it is the subject as it is
    html_ascii: bool  # html_source is ASCII: anything non-ASCII in the output came from phase 2
    html_template: jinja2.Template
    text_template: jinja2.Template
    phase2_tags: tuple[Phase2Tag, ...]


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


_HTML_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=True, **PHASE2_DELIMITERS)
_TEXT_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, **PHASE2_DELIMITERS)


def render_email(
    variant: CompiledVariant,
    *,
    subscriber: Mapping[str, Any],
    links: Mapping[str, str],
    link_url: Callable[[int, str], str] | None = None,
) -> RenderedEmail:
    """Phase 2: the subject, HTML and text of `variant` for one subscriber.

    `link_url(index, original_url)` returns the URL to put in the email (click tracking); it is
    called once per entry of ``variant.links``. A missing variable, an unsafe expression or one
    that fails on this subscriber's values raises :class:`TemplateError` naming the source
    template (and line, where jinja's message tells which tag).
    """
    urls = list(variant.links) if link_url is None else [link_url(i, u) for i, u in enumerate(variant.links)]
    context = {"subscriber": subscriber, "links": links, LINKS_VARIABLE: urls}
    part = "subject"
    try:
        # Most subjects name nobody: no template to run (no phase-2 tag or comment opens in them).
        subject = variant.subject_source if variant.static_subject else variant.subject_template.render(context)
        part = "html"
        body = variant.html_template.render(context)
        part = "text"
        text = variant.text_template.render(context)
    except jinja2.TemplateError as exc:
        raise _phase2_error(variant, exc, part) from exc
    except Exception as exc:
        # An expression that fails on this subscriber's values ("ten" + 1, a division by a 0, a
        # format of the wrong type): jinja lets the plain Python error through. It is this
        # email's template error all the same; the send path records it for this delivery alone
        # instead of dying in the middle of a batch (operations/delivery._compose_group).
        raise TemplateError(f"{type(exc).__name__}: {exc} (in the {part})", template=variant.template) from exc
    if variant.html_ascii and not body.isascii():
        # A name like "José" from phase 2, in text or an attribute value: as a character
        # reference it reads the same and keeps the part 7bit-clean (build_mime).
        body = body.encode("ascii", "xmlcharrefreplace").decode("ascii")
    # A header is one line (RFC 5322 §2.2): collapse CR/LF a subscriber value may carry.
    return RenderedEmail(subject=" ".join(subject.split()), html=body, text=text)


@dataclass(slots=True)
class _Entry:
    campaign: Campaign
    step: Step
    segment: Segment
    fingerprint: str
    variant: CompiledVariant
    checked_at: float
    uptodate: tuple[Callable[[], bool], ...]
    missing: tuple[str, ...]


class Renderer:
    """Compiles variants on demand and keeps them.

    ``variant()`` costs a dict lookup when nothing changed. Every `check_interval` seconds (of
    `clock`) it asks the loader whether any template involved changed (jinja's ``uptodate``
    callables, a ``stat`` for FileSystemLoader) or whether a segment override appeared, so a
    long-running worker picks up edited templates without a restart. Compiled variants are also
    kept by content hash, so touching a file without changing it does not recompile MJML.
    """

    def __init__(
        self,
        loader: jinja2.BaseLoader,
        *,
        check_interval: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        max_variants: int = 512,
    ) -> None:
        self.loader = loader
        self.check_interval = check_interval
        self._clock = clock
        self._max = max_variants
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        self._by_hash: dict[str, CompiledVariant] = {}
        self._probe_env = SandboxedEnvironment()

    def variant(self, campaign: Campaign, step: Step, segment: Segment) -> CompiledVariant:
        key = (campaign.id, step.id, segment.id)
        entry = self._entries.get(key)
        now = self._clock()
        if entry is not None:
            same = entry.campaign is campaign and entry.step is step and entry.segment is segment
            if same or entry.fingerprint == _fingerprint(campaign, step, segment):
                if now - entry.checked_at < self.check_interval:
                    return entry.variant
                if self._still_fresh(entry):
                    entry.checked_at = now
                    entry.campaign, entry.step, entry.segment = campaign, step, segment
                    return entry.variant
        phase1 = _phase1(self.loader, campaign, step, segment)
        found = self._by_hash.get(phase1.content_hash)
        compiled = found if found is not None else _phase2(phase1, campaign, step, segment)
        if found is None:
            if len(self._by_hash) >= self._max:  # drop the oldest: dicts keep insertion order
                self._by_hash.pop(next(iter(self._by_hash)))
            self._by_hash[compiled.content_hash] = compiled
        self._entries[key] = _Entry(
            campaign, step, segment, phase1.fingerprint, compiled, now, phase1.uptodate, phase1.missing
        )
        return compiled

    def _still_fresh(self, entry: _Entry) -> bool:
        if not all(check() for check in entry.uptodate):
            return False
        for name in entry.missing:
            try:
                self.loader.get_source(self._probe_env, name)
            except jinja2.TemplateNotFound:
                continue
            return False  # a segment override (or an included file) appeared
        return True


def compile_variant(loader: jinja2.BaseLoader, campaign: Campaign, step: Step, segment: Segment) -> CompiledVariant:
    """Phase 1 without any cache (what :class:`Renderer` does on a miss)."""
    return _phase2(_phase1(loader, campaign, step, segment), campaign, step, segment)


def resolve_template(campaign: Campaign, step: Step, segment: Segment, loader: jinja2.BaseLoader) -> str:
    """``<campaign>/segments/<segment>/<basename>`` if the loader has it, else ``step.template``."""
    candidate = segment_template_name(campaign, step, segment)
    try:
        loader.get_source(SandboxedEnvironment(), candidate)
    except jinja2.TemplateNotFound:
        return step.template
    return candidate


def segment_template_name(campaign: Campaign, step: Step, segment: Segment) -> str:
    return f"{campaign.id}/segments/{segment.id}/{posixpath.basename(step.template)}"


# --- phase 1 ---------------------------------------------------------------------------------


class _RecordingLoader(jinja2.BaseLoader):
    """Delegates to the real loader and remembers every template asked for, found or not.

    It reports each template's *name* as its filename, so jinja's rewritten tracebacks and
    syntax errors name templates relative to the template root.
    """

    def __init__(self, inner: jinja2.BaseLoader) -> None:
        self.inner = inner
        self.found: dict[str, tuple[str, Callable[[], bool] | None]] = {}
        self.missing: list[str] = []

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        try:
            source, _filename, uptodate = self.inner.get_source(environment, template)
        except jinja2.TemplateNotFound:
            if template not in self.missing:
                self.missing.append(template)
            raise
        self.found.setdefault(template, (source, uptodate))
        return source, template, uptodate


@dataclass(frozen=True, slots=True)
class _Phase1:
    entry: str
    mjml: str
    sources: tuple[tuple[str, str], ...]
    uptodate: tuple[Callable[[], bool], ...]
    missing: tuple[str, ...]
    fingerprint: str
    content_hash: str


def _fingerprint(campaign: Campaign, step: Step, segment: Segment) -> str:
    """Everything outside the templates that shapes a variant's output."""
    data = [
        campaign.id, campaign.name, campaign.context, campaign.tracking.utm, [s.id for s in campaign.steps],
        step.id, step.template, segment.id, segment.name, segment.context,
    ]  # fmt: skip
    return json.dumps(data, sort_keys=True, default=repr)


def _phase1_context(campaign: Campaign, step: Step, segment: Segment) -> dict[str, Any]:
    context: dict[str, Any] = {key: _shield(value) for key, value in campaign.context.items()}
    context["campaign"] = {"id": campaign.id, "name": _shield(campaign.name)}
    context["segment"] = {**_shield(segment.context), "id": segment.id, "name": _shield(segment.name)}
    number = [s.id for s in campaign.steps].index(step.id) + 1
    context["step"] = {"id": step.id, "number": number, "total": len(campaign.steps)}
    return context


def _shield(value: Any) -> Any:
    """Keep phase-2 delimiters inside *data* (a clinic name with "[[") from becoming phase-2 code.

    Such strings become escaped Markup with the delimiters wrapped in ``[% raw %]``; everything
    else passes unchanged.
    """
    if isinstance(value, dict):
        return {k: _shield(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shield(v) for v in value]
    if isinstance(value, str) and any(d in value for d in ("[[", "[%", "[#")):
        text = str(escape(value))
        for opener in ("[[", "[%", "[#"):
            text = text.replace(opener, "\x00" + opener + "\x01")
        return Markup(text.replace("\x00", "[% raw %]").replace("\x01", "[% endraw %]"))
    return value


def _phase1(loader: jinja2.BaseLoader, campaign: Campaign, step: Step, segment: Segment) -> _Phase1:
    recorder = _RecordingLoader(loader)
    # cache_size=0: every load goes through the recorder, so we learn every template involved.
    env = SandboxedEnvironment(loader=recorder, undefined=jinja2.StrictUndefined, autoescape=True, cache_size=0)
    candidate = segment_template_name(campaign, step, segment)
    try:
        recorder.get_source(env, candidate)
        entry = candidate
    except jinja2.TemplateNotFound:
        entry = step.template
    try:
        mjml = env.get_template(entry).render(_phase1_context(campaign, step, segment))
    except jinja2.TemplateNotFound as exc:
        where = _template_location(exc, recorder.found) or (entry, None)
        raise TemplateError(f"template not found: {exc.name}", template=where[0], line=where[1]) from None
    except jinja2.TemplateError as exc:
        raise _phase1_error(exc, recorder.found, entry) from None
    sources = tuple((name, source) for name, (source, _) in recorder.found.items())
    fingerprint = _fingerprint(campaign, step, segment)
    digest = hashlib.sha256(json.dumps([entry, fingerprint, sources]).encode()).hexdigest()
    return _Phase1(
        entry=entry,
        mjml=mjml,
        sources=sources,
        uptodate=tuple(u for _, u in recorder.found.values() if u is not None),
        missing=tuple(recorder.missing),
        fingerprint=fingerprint,
        content_hash=digest,
    )


def _template_location(exc: BaseException, names: Mapping[str, object]) -> tuple[str, int] | None:
    """The innermost template frame of a jinja traceback (jinja rewrites frames to template lines)."""
    where = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename in names:
            where = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return where


def _describe(exc: jinja2.TemplateError) -> str:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"Jinja syntax error: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"refused by the template sandbox: {exc.message}"
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined variable: {exc.message}"
    return f"{type(exc).__name__}: {exc.message}"


def _phase1_error(exc: jinja2.TemplateError, names: Mapping[str, object], entry: str) -> TemplateError:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return TemplateError(_describe(exc), template=exc.name or entry, line=exc.lineno)
    template, line = _template_location(exc, names) or (entry, None)
    return TemplateError(_describe(exc), template=template, line=line)


# --- from phase-1 output to the three phase-2 templates ---------------------------------------


def _phase2(p1: _Phase1, campaign: Campaign, step: Step, segment: Segment) -> CompiledVariant:
    try:
        # fonts={}: MJML would otherwise import Google Fonts for any family it knows (Roboto in our
        # font stack): a third-party request on every open. An explicit <mj-font> still works.
        compiled_html = mjml2html(p1.mjml, fonts={})
    except ValueError as exc:
        where = mjml_error_line(p1.mjml, p1.sources, str(exc))
        template, line = where if where else (p1.entry, None)
        raise TemplateError(f"MJML error: {exc}", template=template, line=line) from None
    clinic = campaign.context.get("clinic")
    website = clinic.get("website") if isinstance(clinic, dict) else None
    parts = phase2_sources(compiled_html, p1.mjml, utm=campaign.tracking.utm, website=website)
    tags = tuple(
        Phase2Tag(name, source.count("\n", 0, m.start()) + 1, m.group(0))
        for name, source in p1.sources
        for m in PHASE2_TAG.finditer(source)
    )
    label = f"{p1.entry} [{segment.id}]"
    built: dict[str, jinja2.Template] = {}
    for part, env, source in (
        ("subject", _TEXT_ENV, parts.subject),
        ("html", _HTML_ENV, parts.html),
        ("text", _TEXT_ENV, parts.text),
    ):
        try:
            code = env.compile(source, name=f"{label} ({part})", filename=f"{label} ({part})")
        except jinja2.TemplateSyntaxError as exc:
            raise _phase2_syntax_error(exc, p1, part) from None
        built[part] = env.template_class.from_code(env, code, env.make_globals(None))
    return CompiledVariant(
        campaign_id=campaign.id,
        step_id=step.id,
        segment_id=segment.id,
        template=p1.entry,
        sources=p1.sources,
        content_hash=p1.content_hash,
        mjml=p1.mjml,
        subject_source=parts.subject,
        preheader_source=parts.preheader,
        html_source=parts.html,
        text_source=parts.text,
        links=parts.links,
        subject_template=built["subject"],
        static_subject=not any(opener in parts.subject for opener in ("[[", "[%", "[#")),
        html_ascii=parts.html.isascii(),
        html_template=built["html"],
        text_template=built["text"],
        phase2_tags=tags,
    )


# --- errors mapped back to the source templates -----------------------------------------------

_MENTIONED = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)'")


def _phase2_error(variant: CompiledVariant, exc: jinja2.TemplateError, part: str) -> TemplateError:
    """Name the source template and line of the phase-2 tag that failed.

    The compiled HTML has little to do with the source's lines, so we look for the tag that
    mentions the names in jinja's message (``'dict object' has no attribute 'nickname'``).
    """
    names = [n for n in _MENTIONED.findall(exc.message or "") if n not in ("dict", "object", "str")]
    for name in reversed(names):
        word = re.compile(rf"\b{re.escape(name)}\b")
        for tag in variant.phase2_tags:
            if word.search(tag.text):
                return TemplateError(f"{_describe(exc)} in {tag.text}", template=tag.template, line=tag.line)
    where = _template_location(exc, {f"{variant.template} [{variant.segment_id}] ({part})": None})
    if where is None:
        return TemplateError(f"{_describe(exc)} (in the {part})", template=variant.template)
    return TemplateError(_describe(exc), template=where[0], line=where[1])


def _phase2_syntax_error(exc: jinja2.TemplateSyntaxError, p1: _Phase1, part: str) -> TemplateError:
    """Re-parse each source on its own with the phase-2 delimiters to find the faulty line."""
    for name, source in p1.sources:
        try:
            _TEXT_ENV.parse(source)
        except jinja2.TemplateSyntaxError as inner:
            message = f"Jinja syntax error (phase 2): {inner.message}"
            return TemplateError(message, template=name, line=inner.lineno)
    return TemplateError(f"Jinja syntax error (phase 2, {part}): {exc.message}", template=p1.entry)
