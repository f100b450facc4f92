"""Read the signup forms (``campaigns/forms/*.yaml``) and the sender file (``campaigns/sender.yaml``),
and check them against the campaigns they name: the file side of :mod:`cadence.core.signup_forms`
and :mod:`cadence.core.sender`, used by ``cadence web`` and ``cadence campaigns validate``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cadence.core.form_checks import FormProblem, check_against_drip, check_joins
from cadence.core.sender import Sender, sender_from_text
from cadence.core.signup_forms import SignupForm, form_from_text, line_of
from cadence.errors import CampaignError, ConfigError, NotFound


def load_sender(path: Path) -> Sender:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(
            f"{path}: no sender file: it holds the name and postal address every email must carry "
            "(set CADENCE_SENDER_FILE to use another file)"
        ) from None
    return sender_from_text(text, str(path))


def form_paths(forms_dir: Path) -> list[Path]:
    return sorted([*forms_dir.glob("*.yaml"), *forms_dir.glob("*.yml")])


def load_form(path: Path) -> SignupForm:
    return form_from_text(path.read_text(encoding="utf-8"), path.stem, str(path))


def load_forms(forms_dir: Path) -> dict[str, SignupForm]:
    """Every form in `forms_dir` by name; CampaignError (all bad files, one line each) if any is bad."""
    forms: dict[str, SignupForm] = {}
    errors: list[str] = []
    for path in form_paths(forms_dir):
        try:
            forms[path.stem] = load_form(path)
        except CampaignError as exc:
            errors.append(str(exc))
    if errors:
        raise CampaignError("\n".join(errors))
    return forms


def choose_default_form(forms: dict[str, SignupForm], name: str = "") -> SignupForm:
    """The form ``/subscribe`` serves: `name` (CADENCE_DEFAULT_FORM), else the only form, else
    the one whose file says ``default: true``."""
    if not forms:
        raise ConfigError(
            "no signup form: `cadence web` serves the files in <campaigns dir>/forms/ (example: campaigns/forms)"
        )
    if name:
        if name not in forms:
            raise ConfigError(f"CADENCE_DEFAULT_FORM: no form {name!r} (forms: {', '.join(sorted(forms)) or 'none'})")
        return forms[name]
    if len(forms) == 1:
        return next(iter(forms.values()))
    marked = [form for form in forms.values() if form.default]
    if len(marked) != 1:
        raise ConfigError(
            "CADENCE_DEFAULT_FORM: set it to the form /subscribe serves, or mark exactly one form file "
            f"with 'default: true' (forms: {', '.join(sorted(forms)) or 'none'})"
        )
    return marked[0]


def check_forms(
    forms_dir: Path, sender_file: Path, campaigns_dir: Path, base_url: str | None = None
) -> list[FormProblem]:
    """Every problem of the forms and the sender file: bad files, unknown drips or topics, and
    answers that reach no segment rule of the drip they join (see ``check_against_drip``)."""
    from cadence.files.campaigns import find_campaign, list_campaigns

    problems: list[FormProblem] = []
    topics: set[str] = set()
    try:
        sender = load_sender(sender_file)
        topics = set(sender.topics)
    except (CampaignError, NotFound) as exc:
        problems += [FormProblem(*_split(line, str(sender_file))) for line in str(exc).splitlines()]
    drips = {path.stem for path in list_campaigns(campaigns_dir)}
    defaults = []
    for path in form_paths(forms_dir):
        try:
            form = load_form(path)
        except CampaignError as exc:
            problems += [FormProblem(*_split(line, str(path))) for line in str(exc).splitlines()]
            continue
        defaults += [form.name] if form.default else []
        found = check_joins(form, drips, topics)
        if form.drip in drips:
            try:
                found += check_against_drip(form, find_campaign(form.drip, campaigns_dir, base_url=base_url))
            except (CampaignError, NotFound) as exc:
                found.append(FormProblem(str(path), f"joins.drip: {form.drip!r} does not load: {exc}"))
        problems += [_with_line(problem, path) for problem in found]
    if len(defaults) > 1:
        problems.append(FormProblem(str(forms_dir), f"'default: true' on more than one form: {', '.join(defaults)}"))
    return problems


def _with_line(problem: FormProblem, path: Path) -> FormProblem:
    """`problem` with the line of its ``loc`` in the file appended to its source (``path:14``)."""
    line = line_of(path.read_text(encoding="utf-8"), list(problem.loc)) if problem.loc else None
    return replace(problem, source=f"{problem.source}:{line}") if line else problem


def _split(line: str, source: str) -> tuple[str, str]:
    """``path:12: field: msg`` → (``path:12``, ``field: msg``): where, and what."""
    if not line.startswith(source):
        return source, line
    rest = line[len(source) :]
    where, _, message = rest.partition(": ")
    return source + where, message
