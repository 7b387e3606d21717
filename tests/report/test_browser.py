"""The benchmark report of a real (tiny) run, opened from disk in headless chromium:
the leaderboard and every image render, and the page fetches nothing from outside."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import browser_paths, external, open_page

from conftest import tiny_suite_text
from samecurve.report.build import write_report
from samecurve.run.runner import run_suite
from samecurve.run.suite import parse_suite

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, cache, population):
    browser_paths()  # skip before running anything when there is no browser
    folder = tmp_path_factory.mktemp("browser-run")
    suite = parse_suite(tiny_suite_text('[oracle, "null", random]'))
    run_suite(suite, folder, workers=0, cache=cache, progress=False).close()
    report, _ = write_report(folder)
    return open_page(report, folder / "screenshot.png")


def test_the_leaderboard_is_on_the_page(page) -> None:
    assert page.title.startswith("samecurve")
    assert "leaderboard" in page.table_classes
    for tool in ("oracle", "null", "random"):
        assert tool in page.text
    assert "Detection AUROC" in page.text or "AUROC" in page.text


def test_every_image_decodes(page) -> None:
    assert len(page.images) >= 3  # charts and the gallery's strips
    broken = [alt for alt, w, h in page.images if w == 0 or h == 0]
    assert not broken, broken


def test_nothing_is_fetched_from_outside(page) -> None:
    assert not external(page.resources), external(page.resources)


def test_the_screenshot_is_a_real_picture(page) -> None:
    data = Path(page.screenshot).read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000
