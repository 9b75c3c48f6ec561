"""The documentation's links: every relative link and anchor resolves, the docs site builds with
warnings as errors, and the README stays short (a quick start and links; the rest has a page of
its own in docs/)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``."""
    out = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target} does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name}: no heading #{anchor} in {file.name}"


def test_the_docs_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a broken link or anchor, or a page left out of the
    navigation, fails it; every page of docs/ is in the site."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    built = {path.parent.name for path in tmp_path.glob("*/index.html")}
    pages = {page.stem for page in (ROOT / "docs").glob("*.md")} - {"index"}
    assert pages <= built


def test_the_readme_is_a_quick_start_and_links() -> None:
    assert len((ROOT / "README.md").read_bytes()) < 7_000


def test_the_performance_page_quotes_the_latest_runs_targets_as_they_are() -> None:
    """docs/performance.md shows the targets of bench/results/latest.md; a new run that is not
    copied over fails here, so the page never shows figures the results do not hold."""
    page = (ROOT / "docs" / "performance.md").read_text()
    quoted = page.split("<!-- targets: copied from bench/results/latest.md -->\n")[1]
    quoted = quoted.split("<!-- end of targets -->")[0].strip()
    latest = (ROOT / "bench" / "results" / "latest.md").read_text()
    assert quoted.startswith("| symbols | target | measured | met |")
    assert latest.split("**Targets**:")[1].strip() == quoted
