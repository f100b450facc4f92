"""``cadence campaigns diff`` through the installed command, in a git repository of its own made
from the project's campaigns/ and templates/: a subject change, a link change and a change of
look, each in the template of one email, are listed as such, and the pictures of the change of
look mark the changed pixels and nothing else."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
from PIL import Image, ImageChops

from cadence.core.render import Renderer
from cadence.files.campaigns import load_campaign
from cadence.review.previews import email_grid, preview_file_name
from cadence.review.visual_diff import GAP
from tests.support.cluster import cadence_env
from tests.support.services import unavailable

ROOT = Path(__file__).resolve().parents[1]
CADENCE = str(Path(sys.executable).with_name("cadence"))
NEW_SUBJECT = "Reviewed like code"
NEW_LINK = "https://precisionbodywork.example/reviewed"
HIGHLIGHT = (255, 212, 0)  # the background the change of look gives one paragraph
GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]


def cadence(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = cadence_env(
        repo / ".cadence",
        CADENCE_CAMPAIGNS_DIR=str(repo / "campaigns"),
        CADENCE_TEMPLATES_DIR=str(repo / "templates"),
        COLUMNS="250",
    )
    return subprocess.run([CADENCE, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=240)


def make_repo(path: Path) -> Path:
    path.mkdir()
    for name in ("campaigns", "templates"):
        shutil.copytree(ROOT / name, path / name)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=path, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "the series as it is"], cwd=path, check=True)
    return path


def emails_by_entry_template(repo: Path) -> list[tuple[Path, list[str]]]:
    """Each entry template with the preview names of the emails it makes, fewest first: editing
    the template changes those emails and no other, whatever the segment composition is."""
    campaign = load_campaign(repo / "campaigns" / "lower-back-pain.yaml")
    renderer = Renderer(jinja2.FileSystemLoader(str(repo / "templates")))
    groups: dict[str, list[str]] = {}
    for step, segments in email_grid(campaign):
        for segment in segments:
            name = preview_file_name(campaign, step, segment).removesuffix(".html")
            groups.setdefault(renderer.variant(campaign, step, segment).template, []).append(name)
    return sorted(((repo / "templates" / entry, names) for entry, names in groups.items()), key=lambda g: len(g[1]))


def change_subject(template: Path) -> None:
    source = template.read_text(encoding="utf-8")
    block = f"{{% block subject %}}{NEW_SUBJECT}{{% endblock %}}"
    pattern = re.compile(r"\{% block subject %\}.*?\{% endblock %\}", re.DOTALL)
    source = pattern.sub(block, source, count=1) if pattern.search(source) else source + "\n" + block + "\n"
    template.write_text(source, encoding="utf-8")


def change_first_paragraph(template: Path, new_opening: str) -> None:
    source = template.read_text(encoding="utf-8")
    assert "<p>" in source, f"{template} has no <p> to change"
    template.write_text(source.replace("<p>", new_opening, 1), encoding="utf-8")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("diff") / "project")


def test_an_unchanged_working_tree_lists_no_change_and_exits_0(repo: Path) -> None:
    result = cadence(repo, "campaigns", "diff", "--exit-code")
    assert result.returncode == 0, result.stderr
    assert "lower-back-pain: no email changed since HEAD" in result.stdout


@pytest.fixture(scope="module")
def changed(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[str]], str, Path]:
    """The three deliberate changes, each in the entry template of a few emails, and the output
    of one diff with pictures."""
    if not Path("/usr/bin/chromium").exists():
        unavailable("Chromium", "apt-get install chromium (the tests use /usr/bin/chromium)")
    groups = emails_by_entry_template(repo)
    assert len(groups) >= 3, "need three entry templates to change one each"
    (subject_file, subject_emails), (link_file, link_emails), (look_file, look_emails) = groups[:3]
    change_subject(subject_file)
    change_first_paragraph(link_file, f'<p>Also see <a href="{NEW_LINK}">our new page</a>. ')
    change_first_paragraph(look_file, '<p style="background-color:#ffd400;">')
    out = tmp_path_factory.mktemp("preview")
    result = cadence(repo, "campaigns", "diff", "--campaign", "lower-back-pain", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    names = {"subject": subject_emails, "link": link_emails, "look": look_emails}
    return names, result.stdout, out


def _listing(stdout: str, name: str) -> str:
    """The lines under `name` in the listing, up to the next email."""
    block = re.search(rf"^  {re.escape(name)}\n((?:    .*\n)*)", stdout, re.MULTILINE)
    assert block, f"{name} not listed:\n{stdout}"
    return block.group(1)


def test_the_listing_names_each_changed_email_and_how_it_changed(
    changed: tuple[dict[str, list[str]], str, Path], repo: Path
) -> None:
    names, stdout, _ = changed
    total = sum(len(segments) for _, segments in email_grid(load_campaign(repo / "campaigns" / "lower-back-pain.yaml")))
    count = sum(len(emails) for emails in names.values())
    assert f"lower-back-pain: {count} of {total} emails changed since HEAD" in stdout
    for email in names["subject"]:
        assert f"-> '{NEW_SUBJECT}'" in _listing(stdout, email)
    for email in names["link"]:
        link = _listing(stdout, email)
        assert f"link added: {NEW_LINK}" in link and re.search(r"text: -\d+ \+\d+ lines", link)
    for email in names["look"]:
        look = _listing(stdout, email)
        assert look.strip().startswith("looks different") and look.count("\n") == 1  # and nothing else


def test_the_pictures_mark_only_the_pixels_around_the_change_of_look(
    changed: tuple[dict[str, list[str]], str, Path],
) -> None:
    names, stdout, out = changed
    look = names["look"][0]
    assert (out / "index.html").is_file() and (out / "diff.html").is_file()
    assert f"diff/{look}-375.png" in (out / "diff.html").read_text(encoding="utf-8")
    for width in (375, 600):
        reported = re.search(rf"{re.escape(look)} {width} px: pixels differ in x (\d+)-(\d+), y (\d+)-(\d+)", stdout)
        assert reported, stdout
        left, right, top, bottom = (int(v) for v in reported.groups())
        with Image.open(out / "diff" / f"{look}-{width}.png") as picture:
            image = picture.convert("RGB")
        panel = (image.width - 2 * GAP) // 3
        before, after, marked = (image.crop((i * (panel + GAP), 0, i * (panel + GAP) + panel, image.height)) for i in range(3))  # noqa: E501
        box = ImageChops.difference(before, after).getbbox()
        assert box is not None and all(abs(a - b) <= 2 for a, b in zip(box, (left, top, right, bottom), strict=True))
        # The paragraph that changed colour is where the pixels differ, and nowhere else.
        paragraph = _bbox_of_colour(after, HIGHLIGHT)
        assert paragraph is not None
        assert abs(paragraph[1] - top) <= 2 and abs(paragraph[3] - bottom) <= 2, (paragraph, box)
        assert bottom - top < image.height / 4
        red = _bbox_of_colour(marked, (230, 0, 80))
        assert red is not None and red[1] >= top and red[3] <= bottom


def _bbox_of_colour(image: Image.Image, colour: tuple[int, int, int]) -> tuple[int, int, int, int] | None:
    solid = Image.new("RGB", image.size, colour)
    return ImageChops.difference(image, solid).convert("L").point(lambda v: 255 if v < 8 else 0).getbbox()


def test_with_exit_code_a_change_exits_1_like_git_diff(
    changed: tuple[dict[str, list[str]], str, Path], repo: Path
) -> None:
    result = cadence(repo, "campaigns", "diff", "--no-screenshots", "--exit-code")
    count = sum(len(emails) for emails in changed[0].values())
    assert result.returncode == 1 and f"{count} of" in result.stdout


def test_a_campaign_missing_at_the_revision_is_one_clear_error(repo: Path) -> None:
    source = (repo / "campaigns" / "lower-back-pain.yaml").read_text(encoding="utf-8")
    (repo / "campaigns" / "spring-news.yaml").write_text(source.replace("id: lower-back-pain", "id: spring-news"))
    try:
        result = cadence(repo, "campaigns", "diff", "--campaign", "spring-news", "--no-screenshots")
    finally:
        (repo / "campaigns" / "spring-news.yaml").unlink()
    assert result.returncode == 1
    assert result.stderr.strip() == "error: campaign 'spring-news' does not exist at HEAD"


def test_an_unknown_revision_is_an_error_and_exit_code_keeps_errors_apart_from_changes(repo: Path) -> None:
    result = cadence(repo, "campaigns", "diff", "no-such-branch", "--no-screenshots")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: unknown revision 'no-such-branch': git cannot find such a commit"
    assert cadence(repo, "campaigns", "diff", "no-such-branch", "--exit-code").returncode == 2


def test_outside_a_git_repository_the_error_says_so(tmp_path: Path) -> None:
    for name in ("campaigns", "templates"):
        shutil.copytree(ROOT / name, tmp_path / name)
    result = cadence(tmp_path, "campaigns", "diff", "--no-screenshots")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "is not inside a git repository" in result.stderr


def test_a_usage_error_exits_2_without_a_traceback(repo: Path) -> None:
    result = cadence(repo, "campaigns", "diff", "--no-such-option")
    assert result.returncode == 2 and "No such option" in result.stderr and "Traceback" not in result.stderr


def test_a_template_that_no_longer_renders_is_listed_once_per_email_and_is_an_error(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "project")
    template, emails = emails_by_entry_template(repo)[0]
    source = template.read_text(encoding="utf-8")
    template.write_text(source.replace("<p>", "<p>{% if %}", 1), encoding="utf-8")
    result = cadence(repo, "campaigns", "diff", "--campaign", "lower-back-pain")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: {len(emails)} email(s) fail to render in the working tree: "
        "`cadence campaigns validate` shows where"
    )
    for email in emails:  # the error, without the noise of an empty subject, text and links
        listing = _listing(result.stdout, email)
        assert listing.strip().startswith("error now:") and listing.count("\n") == 1
    assert cadence(repo, "campaigns", "diff", "--exit-code", "--no-screenshots").returncode == 2
