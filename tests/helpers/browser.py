"""Open an HTML file from disk in Debian's headless chromium (through Selenium and
the distribution's chromedriver, so nothing is downloaded) and read back what a
reader would see: the text, the decoded images, every resource the page loaded,
and a screenshot."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "apt-get install chromium chromium-driver"


@dataclass(frozen=True)
class PageView:
    title: str
    text: str  # the rendered page's visible text
    table_classes: tuple[str, ...]  # class of every <table>, in order
    images: tuple[tuple[str, int, int], ...]  # (alt, natural width, natural height)
    resources: tuple[str, ...]  # every URL the page fetched (images, scripts, styles)
    screenshot: Path


def browser_paths() -> tuple[str, str]:
    """(browser, driver) on PATH, or skip the test naming the packages to install."""
    browser = next((p for b in BROWSERS if (p := shutil.which(b))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(f"no headless chromium and chromedriver here; {INSTALL}")
    return browser, driver


def open_page(html: Path, screenshot: Path, width: int = 1280, height: int = 2400) -> PageView:
    """Render `html` as a reader would and save a full-width screenshot."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    browser, driver = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        chrome.get(html.resolve().as_uri())
        chrome.execute_script("return document.fonts ? document.fonts.ready : null")
        images = chrome.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.naturalHeight])"
        )
        resources = chrome.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        tables = chrome.execute_script(
            "return Array.from(document.querySelectorAll('table')).map(t => t.className)"
        )
        text = chrome.find_element("tag name", "body").text
        chrome.save_screenshot(str(screenshot))
        return PageView(chrome.title, text, tuple(tables), tuple(tuple(i) for i in images),
                        tuple(resources), screenshot)
    finally:
        chrome.quit()


def external(resources: tuple[str, ...]) -> list[str]:
    """The resources that did not come from the page itself (data: URIs) or from disk."""
    return [r for r in resources if not r.startswith(("data:", "file:"))]
