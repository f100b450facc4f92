"""``cadence campaigns diff`` through the installed command, in a git repository of its own made
from the project's campaigns/ and templates/: a subject change, a link change and a change of
look, each in the template of one email, are listed as such, and the pictures of the change of
look mark the changed pixels and nothing else."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jinja2
import pytest
from PIL import Image, ImageChops

from cadence.authoring import email_grid, preview_file_name
from cadence.campaign_files import load_campaign
from cadence.core.render import Renderer
from cadence.visual_diff import GAP
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


def emails_with_a_template_of_their_own(repo: Path) -> list[tuple[str, Path]]:
    """(preview name, entry template) of the emails whose entry template no other email uses, so
    editing it changes that email alone, whatever the segment composition is."""
    campaign = load_campaign(repo / "campaigns" / "lower-back-pain.yaml")
    renderer = Renderer(jinja2.FileSystemLoader(str(repo / "templates")))
    entries = {
        preview_file_name(campaign, step, segment).removesuffix(".html"): renderer.variant(
            campaign, step, segment
        ).template
        for step, segments in email_grid(campaign)
        for segment in segments
    }
    uses = Counter(entries.values())
    return [(name, repo / "templates" / entry) for name, entry in entries.items() if uses[entry] == 1]


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
def changed(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str, Path]:
    """The three deliberate changes, and the output of one diff with pictures."""
    if not Path("/usr/bin/chromium").exists():
        unavailable("Chromium", "apt-get install chromium (the tests use /usr/bin/chromium)")
    own = emails_with_a_template_of_their_own(repo)
    assert len(own) >= 3, "need three emails with a template of their own to change one each"
    (subject_email, subject_file), (link_email, link_file), (look_email, look_file) = own[0], own[1], own[2]
    change_subject(subject_file)
    change_first_paragraph(link_file, f'<p>Also see <a href="{NEW_LINK}">our new page</a>. ')
    change_first_paragraph(look_file, '<p style="background-color:#ffd400;">')
    out = tmp_path_factory.mktemp("preview")
    result = cadence(repo, "campaigns", "diff", "--campaign", "lower-back-pain", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    names = {"subject": subject_email, "link": link_email, "look": look_email}
    return names, result.stdout, out


def _listing(stdout: str, name: str) -> str:
    """The lines under `name` in the listing, up to the next email."""
    block = re.search(rf"^  {re.escape(name)}\n((?:    .*\n)*)", stdout, re.MULTILINE)
    assert block, f"{name} not listed:\n{stdout}"
    return block.group(1)


def test_the_listing_names_each_changed_email_and_how_it_changed(
    changed: tuple[dict[str, str], str, Path], repo: Path
) -> None:
    names, stdout, _ = changed
    total = sum(len(segments) for _, segments in email_grid(load_campaign(repo / "campaigns" / "lower-back-pain.yaml")))
    assert f"lower-back-pain: 3 of {total} emails changed since HEAD" in stdout
    assert f"-> '{NEW_SUBJECT}'" in _listing(stdout, names["subject"])
    link = _listing(stdout, names["link"])
    assert f"link added: {NEW_LINK}" in link and re.search(r"text: -\d+ \+\d+ lines", link)
    look = _listing(stdout, names["look"])
    assert look.strip().startswith("looks different") and look.count("\n") == 1  # and nothing else


def test_the_pictures_mark_only_the_pixels_around_the_change_of_look(changed: tuple[dict[str, str], str, Path]) -> None:
    names, stdout, out = changed
    look = names["look"]
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


def test_with_exit_code_a_change_exits_1_like_git_diff(changed: tuple[dict[str, str], str, Path], repo: Path) -> None:
    result = cadence(repo, "campaigns", "diff", "--no-screenshots", "--exit-code")
    assert result.returncode == 1 and "3 of" in result.stdout


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
