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
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)  # expect's own default is 5 s, not the page's
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _open(browser: Any, url: str, height: int) -> tuple[Any, Any]:
    """(context, page) of the app in a 1400 px wide window `height` px tall."""
    context = browser.new_context(viewport={"width": 1400, "height": height})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    return context, page


@pytest.fixture
def page(browser: Any, app_server: AppServer) -> Any:  # noqa: F811 - the imported fixture
    context, page = _open(browser, app_server.url, 2000)
    yield page
    context.close()


@pytest.fixture
def short_page(browser: Any, app_server: AppServer) -> Any:  # noqa: F811 - the imported fixture
    """A window 700 px tall: a gallery capped at 55% of it (385 px) cannot hold two maps."""
    context, page = _open(browser, app_server.url, 700)
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
    expect(page.locator("#details")).to_contain_text('"scores"')
    expect(page.locator("#scores")).to_be_hidden()  # breast has no scores: no empty pair of axes
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


def _pick(page: Any, wanted: set[str]) -> None:
    """Tick exactly the pipelines `wanted` on the Compare tab."""
    labels = page.locator("#compare-pick label")
    for i in range(labels.count()):
        label = labels.nth(i)
        if label.locator("input").is_checked() != (label.inner_text().strip() in wanted):
            label.click()


def _clipped(page: Any, selector: str) -> list[str]:
    """The pictures of a gallery that are cut off or scrolled out of its box."""
    return page.evaluate("""(selector) => {
        const wrap = document.querySelector(selector + ' .grid-wrap');
        const box = wrap.getBoundingClientRect();
        const cut = [...wrap.querySelectorAll('img')].filter(img => {
            const r = img.getBoundingClientRect();
            return r.bottom > box.bottom + 1 || r.top < box.top - 1;
        }).map(img => img.src);
        return wrap.scrollHeight > wrap.clientHeight + 1 ? ['scrolls', ...cut] : cut;
    }""", selector)


def test_pipelines_ready_and_compare_shows_every_map(short_page: Any, cbis_dicoms: list[Path]) -> None:
    """The warm-up's state reaches the table by itself; the Compare tab's outputs do not invite
    uploads; on a short window every map is in view (the gallery scrolled them out of sight)."""
    from playwright.sync_api import expect

    page = short_page
    table = page.locator("#pipelines")
    expect(table).to_contain_text("ready (loaded in")  # breast: at once
    expect(table.locator("tr", has_text="cascade").first).to_contain_text("ready (loaded in")  # timer
    page.get_by_role("tab", name="Compare pipelines").click()
    expect(page.locator("#compare-overlays")).to_be_visible()
    for output in ("#compare-overlays", "#compare-maps"):
        expect(page.locator(output)).not_to_contain_text("Drop")
        assert page.locator(f"{output} input[type=file]").count() == 0, output
    _upload(page, cbis_dicoms[0])
    _pick(page, {"cascade", "cascade:fgt"})
    page.locator("#compare-run").click()
    maps = page.locator("#compare-maps img")
    expect(maps).to_have_count(2)  # cascade's lesion probability, twice
    expect(page.locator("#compare-table")).to_contain_text("cascade:fgt")
    assert _clipped(page, "#compare-maps") == [] and _clipped(page, "#compare-overlays") == []


def test_scores_chart_has_a_number_axis(page: Any, cbis_dicoms: list[Path]) -> None:
    """GLAM's scores as bars on a 0-1 axis, with the patch map; the chart is not a band scale
    (the browser said "domainMax is dropped as it does not work with band scale")."""
    from playwright.sync_api import expect

    from mammo.demo import availability

    available, reason = availability("glam")
    if not available:
        _missing(f"the glam weights ({reason})")
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    _upload(page, cbis_dicoms[4])
    page.locator("#pipeline input").click()
    page.get_by_role("option", name="glam", exact=True).click()
    page.locator("#run").click()
    expect(page.locator("#summary")).to_contain_text(f"glam on {cbis_dicoms[4].name}")
    expect(page.locator("#scores")).to_be_visible()
    expect(page.locator("#patches img")).to_be_visible()
    expect(page.locator("#scores")).to_contain_text("benign")
    band = [text for text in console if "domainMax" in text or "domainMin" in text]
    assert band == [], band


def test_draw_a_box_and_get_its_outline(page: Any, shared_data: Path, tmp_path: Path) -> None:
    """Upload a CDD-CESM image, draw a rectangle on the canvas with the mouse (the brush), see the
    box appear in image pixels, outline it, and get the table row and the outlines picture."""
    from playwright.sync_api import expect

    from mammo.demo import availability

    if not availability("box-lesion")[0]:
        _missing(f"box-lesion ({availability('box-lesion')[1]})")
    image = shared_data / "cdd_cesm" / "images" / "P102_R_DM_CC.jpg"
    _upload(page, image)
    canvas = page.locator("#box-canvas canvas").first
    canvas.scroll_into_view_if_needed()
    expect(page.locator("#box-canvas button[aria-label=Brush]")).to_be_enabled()
    page.wait_for_function("() => { const c = document.querySelector('#box-canvas canvas');"
                           " return c && c.width > 0 }")
    page.locator("#box-canvas button[aria-label=Brush]").click()
    boxes = page.locator("#boxes textarea")
    for attempt in range(3):  # the canvas may still be taking the picture in: draw until it counts
        box = canvas.bounding_box()
        corners = [(0.4, 0.4), (0.6, 0.4), (0.6, 0.6), (0.4, 0.6), (0.4, 0.4)]
        page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
        page.mouse.down()
        for fx, fy in corners[1:]:
            page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy, steps=8)
        page.mouse.up()
        try:
            expect(boxes).not_to_have_value("", timeout=15_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
    x0, y0, x1, y1 = (float(v) for v in boxes.input_value().split(","))
    # The 512-pixel image fills most of the canvas: a rectangle over its middle fifth is ~100 px.
    assert 150 < x0 < x1 < 370 and 150 < y0 < y1 < 370 and 60 < x1 - x0 < 200
    page.locator("#segment-box").click()
    expect(page.locator("#box-table")).to_contain_text("box 1")
    expect(page.locator("#box-outlines img")).to_be_visible()
    expect(page.locator("#box-summary")).to_contain_text("1 box(es) outlined")
    expect(page.locator("#box-downloads a[href$='/findings.csv']")).to_be_visible()
    shot = tmp_path / "app_box.png"
    page.locator("#box-outlines").screenshot(path=str(shot))
    print(f"\nscreenshot: {shot}")
