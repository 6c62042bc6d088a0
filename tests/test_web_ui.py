"""The chat page in a real browser: Playwright driving Debian's headless Chromium against
`llmlab serve` on the packaged SmolLM2 with an API key.

Needs /usr/bin/chromium (`apt-get install chromium`, done by .ci/run) and the `playwright` Python
package (dev extra); nothing downloads a browser. Screenshots go to the test's tmp folder, or to
LLMLAB_UI_SCREENSHOTS (e.g. docs/img) to refresh the ones in docs/ui.md:

    LLMLAB_UI_SCREENSHOTS=docs/img python -m pytest tests/test_web_ui.py
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
KEY = "ui-test-key"
ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    coach_db = tmp_path_factory.mktemp("coach") / "coach.sqlite"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "llmlab", "serve", "--model", "smollm2-135m-instruct", "--port", str(port),
               "--api-key", KEY, "--max-num-seqs", "4", "--kv-memory", "128MiB"]  # fmt: skip
    env = {**os.environ, "LLMLAB_COACH_DB": str(coach_db)}
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                pytest.fail(f"llmlab serve exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("llmlab serve did not come up in 120 s")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does this)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def screenshots(tmp_path):
    folder = Path(os.environ.get("LLMLAB_UI_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(browser, base, key=KEY):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    if key:
        context.add_init_script(f"localStorage.setItem('llmlab.apiKey', {key!r})")
    page = context.new_page()
    page.goto(base + "/")
    return page


def test_api_key_is_asked_once_and_a_wrong_one_is_named(browser, server, screenshots):
    page = open_page(browser, server, key=None)
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    assert "needs an API key" in dialog.inner_text()
    page.get_by_label("Key", exact=True).fill("wrong-key")
    page.keyboard.press("Enter")
    page.get_by_text("The API key was not accepted").wait_for()
    page.screenshot(path=str(screenshots / "ui-api-key.png"))
    page.get_by_label("Key", exact=True).fill(KEY)
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    assert "smollm2-135m-instruct" in page.locator("#model").inner_text()
    page.reload()  # kept in this browser: no second prompt
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    assert not page.get_by_role("dialog").is_visible()
    page.context.close()


def test_answer_streams_stops_and_survives_a_reload(browser, server, screenshots):
    page = open_page(browser, server)
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    page.get_by_label("Max tokens").fill("200")
    page.get_by_label("Temperature").fill("0")
    # Keyboard only: the message box is found by its label, Enter sends.
    page.get_by_label("Message").fill("Explain in detail what dropout is in neural networks.")
    page.get_by_label("Message").press("Enter")
    answer = page.locator("article.message.assistant .content").last
    lengths = []
    deadline = time.time() + 120
    while time.time() < deadline and len(set(lengths)) < 4:
        lengths.append(len(answer.inner_text()))
        time.sleep(0.05)
    distinct = sorted(set(n for n in lengths if n > 0))
    assert len(distinct) >= 3, lengths  # the text grew in steps while the answer was streaming
    page.get_by_role("button", name="Stop").click()
    page.get_by_text("(stopped)").wait_for()
    stopped = answer.inner_text()
    time.sleep(1.0)
    assert page.locator("article.message.assistant .content").last.inner_text() == stopped
    assert page.get_by_role("button", name="Stop").is_disabled()
    page.screenshot(path=str(screenshots / "ui-chat.png"))
    page.reload()
    page.locator("article.message.user").first.wait_for()
    assert "dropout" in page.locator("article.message.user").first.inner_text()
    assert page.locator("article.message.assistant .content").last.inner_text() == stopped
    assert page.get_by_text("(stopped)").is_visible()
    page.context.close()


def test_tool_call_is_rendered(browser, server, screenshots):
    page = open_page(browser, server)
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    page.get_by_label("Tools").select_option("required")
    page.get_by_label("Message").fill("What is 12 times 7? Use the calculator.")
    page.get_by_label("Message").press("Enter")
    call = page.locator(".tool-call").first
    call.wait_for(timeout=120_000)
    page.get_by_role("button", name="Send").wait_for(state="visible")
    page.wait_for_function("!document.querySelector('#send').disabled", timeout=120_000)
    text = page.locator(".tool-call").first.inner_text()
    assert text.startswith("tool call: calculator(") and '"expression"' in text
    page.screenshot(path=str(screenshots / "ui-tool-call.png"))
    page.context.close()


def test_conversations_new_rename_delete(browser, server):
    page = open_page(browser, server)
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    page.get_by_role("button", name="+ New conversation").click()
    page.once("dialog", lambda d: d.accept("Renamed chat"))
    page.get_by_role("button", name="Rename").click()
    page.get_by_role("button", name="Renamed chat").wait_for()
    count = page.locator("#conversation-list li").count()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete").click()
    page.wait_for_function(
        f"document.querySelectorAll('#conversation-list li').length === {max(count - 1, 1)}"
    )
    assert page.get_by_role("button", name="Renamed chat").count() == 0
    with page.expect_download() as download:
        page.get_by_role("button", name="Export JSON").click()
    path = download.value.path()
    assert path and shutil.os.path.getsize(path) > 2
    page.context.close()


def cited_section_ok(page, first_line: int) -> str:
    """The highlighted heading is the last one at or before the cited line; returns its text."""
    target = page.locator(".cited-target")
    target.wait_for()
    line = int(target.get_attribute("data-line"))
    later = page.evaluate(
        f"[...document.querySelectorAll('#notes [data-line]')].map(h => +h.dataset.line).filter(n => n > {line} && n <= {first_line})"
    )
    assert line <= first_line and later == [], (line, first_line, later)
    return target.inner_text()


def test_notes_browser_search_opens_the_section(browser, server, screenshots):
    page = open_page(browser, server)
    page.goto(server + "/notes")
    page.locator("#notes h2").first.wait_for()
    assert page.locator("#notes h1, #notes h2").count() > 20
    page.get_by_label("Search the notes").fill("为什么要做归一化")
    page.get_by_label("Search the notes").press("Enter")
    first = page.locator("#search-results a.result").first
    first.wait_for(timeout=60_000)
    href = first.get_attribute("href")
    assert href.startswith("#L")
    first.click()
    heading = cited_section_ok(page, int(href[2:]))
    assert heading.strip()
    page.screenshot(path=str(screenshots / "ui-notes.png"))
    page.context.close()


def test_rag_answer_cites_sections_that_open_in_the_notes(browser, server, screenshots):
    page = open_page(browser, server)
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    page.get_by_label("Answer from the notes").check()
    page.get_by_label("Max tokens").fill("40")
    page.get_by_label("Message").fill("为什么要做归一化？")
    page.get_by_label("Message").press("Enter")
    citation = page.locator("a.citation").first
    citation.wait_for(timeout=180_000)
    page.wait_for_function("!document.querySelector('#send').disabled", timeout=180_000)
    assert page.locator("a.citation").count() >= 1
    page.screenshot(path=str(screenshots / "ui-rag.png"))
    href = citation.get_attribute("href")
    assert href.startswith("/notes#L")
    citation.click()
    page.wait_for_url("**/notes#L*")
    cited_section_ok(page, int(href.split("#L")[1]))
    page.context.close()


def test_coach_question_answer_grade_and_next_scheduled(browser, server, screenshots):
    page = open_page(browser, server)
    page.goto(server + "/coach")
    page.wait_for_function("document.querySelector('#section').options.length > 1")
    page.get_by_label("Questions from").select_option("基础知识点")
    page.get_by_role("button", name="Next question").click()
    question = page.locator("#question")
    question.wait_for()
    first = question.inner_text()
    assert first.strip()
    page.get_by_label("Your answer").fill(
        "反向传播时梯度逐层连乘，导数小于1就梯度消失，大于1就梯度爆炸；sigmoid饱和、初始化不当、网络过深都会加剧。"
    )
    page.get_by_label("Your answer").press("Control+Enter")
    page.locator("#result").wait_for(timeout=180_000)
    score = int(page.locator("#score").inner_text())
    assert 0 <= score <= 5
    assert page.locator("#hit li").count() + page.locator("#missed li").count() >= 1
    assert page.locator("#reference").inner_text().strip()
    assert page.locator("#section-link").get_attribute("href").startswith("/notes#L")
    assert page.locator("#next-review").inner_text().strip()
    rows = page.locator("#progress tbody tr", has_text="基础知识点")
    page.wait_for_function(
        "[...document.querySelectorAll('#progress tbody tr')].some(r => r.cells[0].textContent === '基础知识点' && r.cells[2].textContent === '1')"
    )
    assert rows.count() == 1
    # The model's feedback streams in (not an error line).
    page.wait_for_function(
        "(t => t.length > 20 && t !== '…' && !t.startsWith('(no model feedback'))(document.querySelector('#feedback').textContent)",
        timeout=180_000,
    )
    page.screenshot(path=str(screenshots / "ui-coach.png"), full_page=True)
    page.get_by_role("button", name="Next question").click()
    page.wait_for_function(f"document.querySelector('#question').textContent !== {first!r}")
    assert page.locator("#result").is_hidden()  # a new question, the answered one scheduled later
    page.context.close()
