"""End to end in a real browser: `streamlit run` on a free port against a fresh test database,
driven by Playwright with Debian's chromium. Saves a screenshot of every page in tests/artifacts/."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "e2e-secret"
WAIT_MS = 30_000

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"streamlit did not become healthy in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`streamlit run` of the dashboard with a password, on the test database; stopped after."""
    port = _free_port()
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'admin_password = "{PASSWORD}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_") and k != "HYBRID_SAVER_NO_SIGNALS"}
    env.update({"DATABASE_URL": db_url, "BACKUP_INTERVAL": "3600", "DASHBOARD_REFRESH": "2", "PYTHONUNBUFFERED": "1"})
    log = tmp_path / "streamlit.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "streamlit_app.py",
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--secrets.files",
                str(secrets),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        (ARTIFACTS / "streamlit.log").parent.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "streamlit.log").write_text(log.read_text())


def _shot(page: Page, name: str) -> None:
    page.wait_for_timeout(400)  # let charts and fonts settle
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _idle(page: Page) -> None:
    """Wait until the script run is over ("Running..." gone), so a click is not lost to a rerun."""
    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=WAIT_MS)


def _nav(page: Page, name: str) -> None:
    heading = page.get_by_role("heading", name=name, level=1)
    for attempt in range(3):
        _idle(page)
        page.get_by_test_id("stSidebarNav").get_by_role("link", name=name).click()
        try:
            expect(heading).to_be_visible(timeout=WAIT_MS // 3)
            return
        except AssertionError:
            # a click that lands while the page reruns after a streamed reply can be dropped
            if attempt == 2:
                raise


def _say(page: Page, text: str, reply: str) -> None:
    box = page.get_by_test_id("stChatInput").locator("textarea")
    box.fill(text)
    box.press("Enter")
    expect(page.get_by_test_id("stChatMessage").filter(has_text=reply).last).to_be_visible(timeout=WAIT_MS)
    _idle(page)


def test_chat_backup_restore_in_a_browser(server: tuple[str, subprocess.Popen], db_url: str) -> None:
    url, proc = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            # a deep link as the server's very first request still shows only the login
            page.goto(f"{url}/threads")
            password = page.get_by_label("Admin password")
            expect(password).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("threads match")).to_have_count(0)
            password.fill("not it")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_text("Wrong password")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)
            _shot(page, "login")
            password.fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_text("threads match")).to_be_visible(timeout=WAIT_MS)

            # chat two turns
            _nav(page, "Chat")
            _say(page, "my name is Ana", "Got it: your name is Ana")
            _say(page, "what is my name?", "Your name is Ana.")
            expect(page.get_by_text("latest changes not backed up yet")).to_be_visible()
            _shot(page, "chat")

            # Backup now, and the run on the Backups page
            _nav(page, "Backups")
            page.get_by_role("button", name="Backup now").click()
            expect(page.get_by_text(re.compile(r"Backup written: generation 1\b"))).to_be_visible(timeout=WAIT_MS)
            kept = page.get_by_test_id("stMetric").filter(has_text="Generations kept")
            expect(kept).to_contain_text("1 / 50", timeout=WAIT_MS)
            runs = page.get_by_test_id("stDataFrame").last
            expect(runs).to_contain_text("manual", timeout=WAIT_MS)
            _shot(page, "backups")

            # a third turn after the backup, then restore generation 1
            _nav(page, "Chat")
            _say(page, "my name is Bob", "your name is Bob")
            _nav(page, "Restore")
            expect(page.get_by_test_id("stMetric").filter(has_text="Threads changed")).to_contain_text(
                "1", timeout=WAIT_MS
            )
            page.get_by_role("button", name=re.compile(r"Restore generation 1 \(all threads\)")).click()
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text("Replace every thread", timeout=WAIT_MS)
            dialog.get_by_role("button", name="Restore", exact=True).click()
            result = page.get_by_test_id("stAlertContentSuccess")
            expect(result).to_contain_text("Restored generation 1", timeout=WAIT_MS)
            expect(result).to_contain_text(re.compile(r"To undo, restore generation \d+"))
            _shot(page, "restore")

            # the chat is as it was at generation 1
            _nav(page, "Chat")
            messages = page.get_by_test_id("stChatMessage")
            expect(messages.last).to_contain_text("Your name is Ana.", timeout=WAIT_MS)
            expect(messages).to_have_count(4)
            expect(page.get_by_text("my name is Bob")).to_have_count(0)

            # the Threads page with the thread open
            _nav(page, "Threads")
            page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Thread", exact=True)).click()
            page.get_by_role("option").first.click()
            expect(page.get_by_role("tab", name="Timeline")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_test_id("stToast")).to_have_count(0, timeout=WAIT_MS)  # the restore's toast
            _shot(page, "threads")
        finally:
            browser.close()

    # SIGTERM: streamlit stops, the saver takes its final backup at exit
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail("streamlit did not exit within 30 s of SIGTERM")
    assert proc.returncode is not None
    with psycopg.connect(db_url) as conn:
        triggers = [r[0] for r in conn.execute("SELECT trigger FROM hybrid_saver.runs ORDER BY id")]
    assert triggers[0] == "manual" and triggers[-1] == "close", triggers
