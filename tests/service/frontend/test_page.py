"""The zoo page in a real browser: headless Chromium (Debian's `chromium`, installed by `make test`) driven by
Playwright against `python -m service` with three models of ten classes. A bundled sample goes through every
model; an undecodable file shows the service's own message and leaves the page working. The screenshot is kept
in test-artifacts/."""

import shutil

import httpx
import numpy as np
import pytest
from playwright.sync_api import expect, sync_playwright

from loadtest.server import ROOT, running_service
from tests.service.conftest import image_bytes, write_model

ARTIFACTS = ROOT / "test-artifacts"
STATIC = ROOT / "service" / "frontend" / "static"
TEN_LABELS = tuple(f"class {i}" for i in range(10))


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    repo = tmp_path_factory.mktemp("page")
    rng = np.random.default_rng(0)
    for name, channels, mode, mean, std in (
        ("ten_rgb", 3, "RGB", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ("ten_rgb_wide", 3, "RGB", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        ("ten_gray", 1, "L", (0.5,), (0.5,)),
    ):
        weight = rng.normal(size=(channels, 10)).astype(np.float32)
        bias = rng.normal(size=10).astype(np.float32)
        write_model(repo, name, weight=weight, bias=bias, labels=TEN_LABELS, color_mode=mode, mean=mean, std=std)
    env = {"SERVE_PROVIDERS": "cpu", "SERVE_INTRA_OP_THREADS": "1"}
    with running_service(repo, [], env=env, timeout=120) as (url, _):
        yield url


@pytest.fixture(scope="module")
def page(service):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the page's test needs Chromium: `make test` installs Debian's chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(service + "/")
        yield page
        browser.close()


def test_a_sample_goes_through_every_model(page):
    expect(page.locator("#models input[type=checkbox]")).to_have_count(3)
    expect(page.locator("#timeline .dot")).to_have_count(3)
    page.get_by_role("button", name="cat").click()
    expect(page.locator("#preview")).to_be_visible()
    page.get_by_role("button", name="Compare").click()
    cards = page.locator("#results .card")
    expect(cards).to_have_count(3)
    for i in range(3):
        expect(cards.nth(i).locator(".prediction")).to_have_count(5)
        expect(cards.nth(i).locator(".warning")).to_contain_text("Random weights")
        expect(cards.nth(i).locator(".timing")).to_contain_text("inference")
    expect(page.locator("#summary")).to_contain_text("3 models")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)


def test_an_undecodable_file_shows_the_services_message(page, service, tmp_path):
    truncated = image_bytes((10, 200, 30), size=(64, 64))[:80]  # a PNG cut short: its header says PNG
    said = httpx.post(f"{service}/v1/compare", content=truncated, headers={"content-type": "image/png"})
    assert said.status_code == 400
    bad = tmp_path / "bad.png"
    bad.write_bytes(truncated)
    page.set_input_files("#file", str(bad))
    page.get_by_role("button", name="Compare").click()
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_have_text(f"400: {said.json()['error']['message']}")
    expect(page.get_by_role("button", name="Compare")).to_be_enabled()
    page.get_by_role("button", name="coffee").click()  # and the page still works
    page.get_by_role("button", name="Compare").click()
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#results .card")).to_have_count(3)


def test_the_page_is_usable_by_keyboard(page):
    page.goto(page.url)
    expect(page.locator("#models input[type=checkbox]")).to_have_count(3)
    page.locator("[data-sample='digit.png']").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#preview")).to_be_visible()
    page.locator("#run").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#results .card")).to_have_count(3)


def test_the_page_needs_nothing_from_elsewhere():
    for file in STATIC.glob("*.*"):
        text = file.read_text()
        assert "http://" not in text and "https://" not in text, file


def test_docs_uploads_a_file_to_classify_offline(page, service):
    """/docs' scripts are served by the service; "Try it out" sends a file and shows the answer."""
    elsewhere = []

    def only_the_service(route):
        if route.request.url.startswith(service):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_service)
    page.goto(service + "/docs")
    operation = page.locator("#operations-classify-classify_v1_classify_post")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator("input[placeholder='model']").fill("ten_rgb")
    operation.locator("input[type=file]").set_input_files(str(STATIC / "samples" / "cat.jpg"))
    operation.get_by_role("button", name="Execute").click()
    expect(operation.locator(".live-responses-table tbody .response-col_status").first).to_contain_text("200")
    expect(operation.locator(".live-responses-table")).to_contain_text("class ")
    page.unroute("**/*")
    assert elsewhere == []


def test_the_page_and_its_samples_are_served(service):
    assert httpx.get(service + "/").headers["content-type"].startswith("text/html")
    for name, kind in (("cat.jpg", "image/jpeg"), ("coffee.jpg", "image/jpeg"), ("digit.png", "image/png")):
        response = httpx.get(f"{service}/static/samples/{name}")
        assert response.status_code == 200 and response.headers["content-type"] == kind
