"""The demo in a real browser: Debian's chromium driven by Playwright, against `python app.py`.

Select with `-m browser`. Needs /usr/bin/chromium (`.ci/run` installs it with apt-get) and the
`playwright` package; Playwright's own browser downloads are not used. Without them the test
skips, except under CI=true, where it fails (a CI run must not pass by skipping it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.dicom_factory import text_file
from tests.test_app import AppServer, app_server  # noqa: F401 - the fixture, reused

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 180_000  # every wait: a 2-core machine that may be training at the same time

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


def _missing(what: str) -> None:
    message = f"browser test needs {what}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI=true requires it (.ci/run installs chromium with apt-get)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package (pip install -r requirements.txt)")
    if not CHROMIUM.is_file():
        _missing(f"{CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, app_server: AppServer) -> Any:  # noqa: F811 - the imported fixture
    context = browser.new_context(viewport={"width": 1400, "height": 2000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_server.url)
    yield page
    context.close()


def _upload(page: Any, path: Path) -> None:
    page.locator("#upload input[type=file]").set_input_files(str(path))
    from playwright.sync_api import expect

    expect(page.locator("#upload")).to_contain_text(path.stem)  # the name shows once uploaded


def test_upload_pick_run_see_overlay_and_scores(page: Any, cbis_dicoms: list[Path], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _upload(page, cbis_dicoms[0])
    page.locator("#pipeline input").click()
    page.get_by_role("option", name="breast", exact=True).click()
    expect(page.locator("#pipeline input")).to_have_value("breast")
    page.locator("#run").click()
    overlay = page.locator("#overlay img")
    expect(overlay).to_be_visible()
    assert overlay.get_attribute("src").endswith(".png")  # sent as PNG, not WebP
    expect(page.locator("#summary")).to_contain_text(f"breast on {cbis_dicoms[0].name}")
    expect(page.locator("#scores")).to_be_visible()
    expect(page.locator("#details")).to_contain_text('"scores"')
    expect(page.locator("#downloads a[href$='/predictions.csv']")).to_be_visible()
    shot = tmp_path / "app_breast.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"\nscreenshot: {shot}")


def test_bad_file_message_in_page(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _upload(page, text_file(tmp_path / "notes.txt"))
    page.locator("#run").click()
    expect(page.get_by_text("notes.txt': it is not an image file").first).to_be_visible()
