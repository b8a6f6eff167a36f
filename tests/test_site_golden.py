"""Golden files of the archive site, as pelican's test_pelican.py diffs a rendered site against
pelican/tests/output/basic: the archive home, one topic page and the Atom feed of the demo
archive (examples/demo.yaml, the issue of 2025-05-06), built by the real CLI into a temporary
folder and compared byte for byte with tests/golden/site/.

After a deliberate change (archive, templates, render, compose, topics.yaml, the demo feeds):
`UPDATE_GOLDEN=1 make test` rewrites them; read `git diff tests/golden` before committing.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.goldenfiles import check_golden

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"
GOLDEN_SITE = REPO / "tests" / "golden" / "site"
PAGES = ("index.html", "topics/rgpd.html", "feed.xml")

pytestmark = pytest.mark.skipif(not DEMO.is_file(), reason="examples/demo.yaml is not there")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", "--config", str(DEMO), "--topics", str(REPO / "topics.yaml"), "--date", "2025-05-06",
                     "--db", str(root / "db.sqlite3"), "--output", str(root / "out")], out=out, err=err)
    assert code == 0, err.getvalue()
    return root / "out"


@pytest.mark.parametrize("page", PAGES)
def test_demo_site_page_matches_its_golden_file(site: Path, page: str) -> None:
    check_golden((site / page).read_text(encoding="utf-8"), GOLDEN_SITE / page)
