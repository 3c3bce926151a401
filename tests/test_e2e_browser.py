"""End to end in a real browser: the dashboard (`python -m dashboard`, as `make run` starts it) on a
free port against a fresh test database, driven by Playwright with Debian's chromium. Saves a
screenshot of every page in tests/artifacts/."""

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

from tests.helpers.fleet import start_members, stop_all

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


class Dashboard:
    """`streamlit run` of the dashboard with a password on a database; can be stopped and started again."""

    def __init__(self, db_url: str, folder: Path) -> None:
        self.db_url = db_url
        self.folder = folder
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = folder / "streamlit.log"
        secrets = folder / "secrets.toml"
        secrets.write_text(f'admin_password = "{PASSWORD}"\n')
        self.secrets = secrets

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_") and k != "HYBRID_SAVER_NO_SIGNALS"}
        env.update(
            {"DATABASE_URL": self.db_url, "BACKUP_INTERVAL": "3600", "DASHBOARD_REFRESH": "2", "PYTHONUNBUFFERED": "1"}
        )
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dashboard",
                    "--server.headless",
                    "true",
                    "--browser.gatherUsageStats",
                    "false",
                    "--server.port",
                    str(self.port),
                    "--server.address",
                    "127.0.0.1",
                    "--secrets.files",
                    str(self.secrets),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_healthy(self.url, self.proc, self.log)

    def stop(self) -> int:
        """SIGTERM: streamlit stops and the saver takes its final backup; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail("streamlit did not exit within 30 s of SIGTERM")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def dashboard(db_url: str, tmp_path: Path) -> Iterator[Dashboard]:
    """The dashboard on the test database, started; killed after the test if still running."""
    board = Dashboard(db_url, tmp_path)
    try:
        board.start()
        yield board
    finally:
        board.kill()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "streamlit.log").write_text(board.log.read_text())


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


def _login(page: Page, url: str, path: str = "") -> None:
    page.goto(f"{url}/{path}")
    password = page.get_by_label("Admin password")
    expect(password).to_be_visible(timeout=WAIT_MS)
    password.fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("stSidebarNav")).to_be_visible(timeout=WAIT_MS)


_NAV_WATCH = """
window.__navSeen = [];
new MutationObserver(() => {
  const nav = document.querySelector('[data-testid="stSidebarNav"]');
  if (nav && window.__navSeen.length < 5) window.__navSeen.push(nav.innerText);
}).observe(document, {childList: true, subtree: true});
"""


def _router_navigation(page: Page) -> None:
    """The sidebar is the router's (page titles in sections), not a list of the pages/ files."""
    nav = page.get_by_test_id("stSidebarNav")
    for title in ("Chat", "Threads", "Backups", "Restore"):
        expect(nav.get_by_role("link", name=title, exact=True)).to_be_visible(timeout=WAIT_MS)
    expect(nav).not_to_contain_text("streamlit app")
    expect(nav).to_contain_text("Operations")


@pytest.mark.all_postgres
def test_chat_backup_restore_in_a_browser(dashboard: Dashboard, db_url: str, pg_version: str) -> None:
    url = dashboard.url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = pg_version == "18"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            # any navigation drawn before the login, even for a moment (Streamlit's list of the pages/
            # files, which a plain `streamlit run` shows until the router's first run)
            page.add_init_script(_NAV_WATCH)
            # a deep link as the server's very first request: the login only, then the router's pages
            page.goto(f"{url}/backups")
            password = page.get_by_label("Admin password")
            expect(password).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text("Backup lag")).to_have_count(0)
            password.fill("not it")
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_text("Wrong password")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)
            if shots:
                _shot(page, "login")
            assert page.evaluate("window.__navSeen") == [], "a navigation was shown before the login"
            password.fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Backups", level=1)).to_be_visible(timeout=WAIT_MS)
            _router_navigation(page)

            # chat two turns; the thread was never backed up: its delete is permanent
            _nav(page, "Chat")
            _say(page, "my name is Ana", "Got it: your name is Ana")
            _say(page, "what is my name?", "Your name is Ana.")
            expect(page.get_by_text("latest changes not backed up yet")).to_be_visible()
            page.get_by_role("button", name="Delete", exact=True).click()
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text("never backed up", timeout=WAIT_MS)
            expect(dialog).to_contain_text("permanent")
            dialog.get_by_role("button", name="Cancel").click()
            expect(dialog).to_have_count(0, timeout=WAIT_MS)
            _idle(page)
            if shots:
                _shot(page, "chat")

            # Backup now, and the run on the Backups page
            _nav(page, "Backups")
            page.get_by_role("button", name="Backup now", exact=True).click()
            expect(page.get_by_text(re.compile(r"Backup written: generation 1\b"))).to_be_visible(timeout=WAIT_MS)
            kept = page.get_by_test_id("stMetric").filter(has_text="Generations kept")
            expect(kept).to_contain_text("1 / 50", timeout=WAIT_MS)
            _idle(page)
            page.get_by_role("button", name="Backup now", exact=True).click()
            expect(page.get_by_text("Nothing to back up")).to_be_visible(timeout=WAIT_MS)
            if shots:
                _shot(page, "backups")

            # a third turn after the backup, a second thread, then restore generation 1 (all threads)
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
            if shots:
                _shot(page, "restore")

            # the chat is as it was at generation 1
            _nav(page, "Chat")
            messages = page.get_by_test_id("stChatMessage")
            expect(messages.last).to_contain_text("Your name is Ana.", timeout=WAIT_MS)
            expect(messages).to_have_count(4)
            expect(page.get_by_text("my name is Bob")).to_have_count(0)

            # undo it for one thread only: pick the thread (by its title) and restore the undo generation
            with psycopg.connect(db_url) as conn:
                undo = conn.execute(
                    "SELECT max(generation) FROM hybrid_saver.generations WHERE trigger = 'pre-restore'"
                ).fetchone()[0]
            _nav(page, "Restore")
            page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Generation", exact=True)).click()
            page.get_by_role("option", name=re.compile(rf"^#{undo} ")).click()
            _idle(page)
            page.get_by_text("One thread", exact=True).click()
            _idle(page)
            # PostgreSQL searches the generation's threads (message text here), then the list shows them
            search = page.get_by_label("Search the generation's threads")
            search.fill("my name is")
            search.press("Enter")
            _idle(page)
            expect(page.get_by_text(re.compile(r"1 thread of generation \d+ match"))).to_be_visible(timeout=WAIT_MS)
            thread_box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Thread", exact=True))
            thread_box.scroll_into_view_if_needed()
            thread_box.locator("input").click()
            page.get_by_role("option").first.click()
            _idle(page)
            page.get_by_role("button", name=re.compile(rf"Restore generation {undo} \(thread ")).click()
            page.get_by_role("dialog").get_by_role("button", name="Restore", exact=True).click()
            expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text(
                f"Restored generation {undo}", timeout=WAIT_MS
            )
            _nav(page, "Chat")
            expect(page.get_by_test_id("stChatMessage").last).to_contain_text("your name is Bob", timeout=WAIT_MS)

            # the Threads page, a row clicked opens the thread
            _nav(page, "Threads")
            grid = page.get_by_test_id("stDataFrame").first
            expect(grid).to_contain_text("my name is Ana", timeout=WAIT_MS)
            grid.locator("canvas").first.click(position={"x": 14, "y": 52}, force=True)  # the first row's selector
            expect(page.get_by_role("tab", name="Timeline")).to_be_visible(timeout=WAIT_MS)
            expect(page).to_have_url(re.compile(r"thread=chat-"), timeout=WAIT_MS)
            if shots:
                _shot(page, "threads")
        finally:
            browser.close()

    assert dashboard.stop() is not None
    with psycopg.connect(db_url) as conn:
        triggers = [r[0] for r in conn.execute("SELECT trigger FROM hybrid_saver.runs ORDER BY id")]
    assert triggers[0] == "manual" and triggers[-1] == "close", triggers


def test_fleet_console_in_a_browser(dashboard: Dashboard, db_url: str, tmp_path: Path) -> None:
    """The dashboard next to two app processes on the same store: members listed, Backup now for all
    writes a generation from each, a restore is coordinated; interval and pause survive a restart;
    sorting by checkpoints puts the largest thread of the store first."""
    members = start_members(db_url, 2, tmp_path, interval="none")
    try:
        for i, member in enumerate(members):
            for turn in range(2 + 3 * i):  # the second member's thread is the largest of the store
                assert member.post("/turn", {"thread": f"app-{i}", "text": f"note {turn}"}).status_code == 200
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1360, "height": 900})
                _login(page, dashboard.url, "backups")
                table = page.get_by_test_id("stDataFrame").first
                for member in members:
                    expect(table).to_contain_text(str(member.instance_id), timeout=WAIT_MS)
                expect(table).to_contain_text("(this dashboard)")
                page.get_by_role("button", name="All members").click()
                toast = page.get_by_test_id("stToast")
                expect(toast).to_contain_text("Backed up", timeout=WAIT_MS)
                with psycopg.connect(db_url) as conn:
                    writers = {
                        r[0]
                        for r in conn.execute("SELECT instance_id FROM hybrid_saver.runs WHERE generation IS NOT NULL")
                    }
                assert {m.instance_id for m in members} <= writers
                _shot(page, "fleet")

                # interval and pause, kept in the store
                _idle(page)
                page.get_by_label("Backup interval (seconds, kept across restarts)").fill("45")
                page.get_by_role("button", name="Apply").click()
                expect(page.get_by_text("Backups now run every")).to_be_visible(timeout=WAIT_MS)
                _idle(page)
                page.get_by_role("button", name="Pause", exact=True).click()
                expect(page.get_by_text("Scheduled backups of this dashboard's saver are paused")).to_be_visible(
                    timeout=WAIT_MS
                )

                # the largest thread of the store first, sorted by PostgreSQL
                _nav(page, "Threads")
                page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Sort by", exact=True)).click()
                page.get_by_role("option", name="Checkpoints").click()
                _idle(page)
                grid = page.get_by_test_id("stDataFrame").first
                expect(grid).to_contain_text("app-1", timeout=WAIT_MS)
                deadline = time.monotonic() + WAIT_MS / 1000
                while time.monotonic() < deadline:
                    text = grid.text_content() or ""
                    if "app-0" in text and text.index("app-1") < text.index("app-0"):
                        break
                    page.wait_for_timeout(200)
                else:
                    pytest.fail(f"app-1 (the largest thread) is not listed first: {grid.text_content()!r}")

                # a coordinated restore: generation 1 for every thread, through the dashboard
                _nav(page, "Restore")
                page.get_by_role("button", name=re.compile(r"Restore generation \d+ \(all threads\)")).click()
                page.get_by_role("dialog").get_by_role("button", name="Restore", exact=True).click()
                expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text("Restored", timeout=WAIT_MS)
                expect(page.get_by_text("handed over their threads first")).to_be_visible(timeout=WAIT_MS)
            finally:
                browser.close()
        # the members serve the restored state
        assert members[1].texts("app-1") == [f"note {t}" for t in range(5)]

        # a restart keeps the interval and the pause
        dashboard.stop()
        dashboard.start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1360, "height": 900})
                _login(page, dashboard.url, "backups")
                expect(page.get_by_text("Scheduled backups of this dashboard's saver are paused")).to_be_visible(
                    timeout=WAIT_MS
                )
                expect(page.get_by_label("Backup interval (seconds, kept across restarts)")).to_have_value("45.00")
            finally:
                browser.close()
    finally:
        stop_all(members)


def _owners(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT convert_from(thread_id, 'UTF8'), owner FROM hybrid_saver.owners").fetchall()
    return {r[0]: int(r[1]) for r in rows}


def _dashboard_id(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT max(id) FROM hybrid_saver.instances WHERE name = 'dashboard' AND stopped_at IS NULL"
        ).fetchone()
    return int(row[0])


def _paused(db_url: str, instance_id: int, timeout: float = 10.0) -> bool:
    """The member's heartbeat says its backups are paused (waits for its first heartbeat)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "SELECT figures->>'paused', name FROM hybrid_saver.instances WHERE id = %s", (instance_id,)
            ).fetchone()
        if row and row[0] is not None:
            return row[0] == "true"
        time.sleep(0.2)
    return False


def test_console_observes_a_member_in_a_browser(dashboard: Dashboard, db_url: str, tmp_path: Path) -> None:
    """An app member process beside the dashboard: opening a thread the member holds leaves it with the
    member (read as of its last backup, or live on request); the Backup column and the restore preview
    count the member's turns not backed up; a restore of every thread leaves the dashboard holding no
    more threads than before; a search from a later page shows its match; a pause set for the member
    survives the member's restart (it keeps its name)."""
    (member,) = start_members(db_url, 1, tmp_path, interval="3600")
    restarted: list = []
    try:
        for i in range(30):  # more than a page of threads
            assert member.post("/turn", {"thread": f"app-{i:02d}", "text": f"note {i}"}).status_code == 200
        assert member.post("/backup").json()["generation"] is not None
        assert member.post("/turn", {"thread": "app-07", "text": "my name is Ana"}).status_code == 200
        time.sleep(2.5)  # a heartbeat publishes the member's pending threads
        owners = _owners(db_url)
        assert owners["app-07"] == member.instance_id
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                _login(page, dashboard.url, "threads?thread=app-07")
                caption = page.get_by_text(re.compile(r"from PostgreSQL as of its last backup, generation \d+"))
                expect(caption).to_be_visible(timeout=WAIT_MS)
                mine = _dashboard_id(db_url)
                before = sum(1 for o in _owners(db_url).values() if o == mine)
                expect(caption).to_contain_text(f"held by member {member.instance_id}")
                expect(caption).to_contain_text("3 newer checkpoints not backed up")
                # a search from page 2 shows the match, and its Backup column counts the member's turns
                grid = page.get_by_test_id("stDataFrame").first
                _idle(page)
                page.get_by_role("button", name="Page 2", exact=True).click()
                expect(page.get_by_text(re.compile(r"30 threads · page 2 of 2"))).to_be_visible(timeout=WAIT_MS)
                _idle(page)
                search = page.get_by_role("textbox", name="Search")
                search.fill("app-07")
                search.press("Enter")
                expect(page.get_by_text(re.compile(r"1 thread match · page 1 of 1"))).to_be_visible(timeout=WAIT_MS)
                expect(grid).to_contain_text("app-07", timeout=WAIT_MS)
                expect(grid).to_contain_text(f"3 checkpoints not backed up on member {member.instance_id}")
                page.get_by_role("button", name=re.compile(r"Read live from member")).click()
                expect(page.get_by_text(re.compile(r"live from member \d+ .*'s memory"))).to_be_visible(timeout=WAIT_MS)
                page.get_by_role("tab", name="State").click()
                expect(page.get_by_test_id("stChatMessage").filter(has_text="my name is Ana")).to_be_visible()
                _shot(page, "threads_fleet")
                assert _owners(db_url) == owners  # nothing changed hands

                # the restore preview counts the member's pending checkpoints; a restore of every thread
                _nav(page, "Restore")
                expect(page.get_by_text(f"member {member.instance_id}: 1 thread not backed up")).to_be_visible(
                    timeout=WAIT_MS
                )
                expect(page.get_by_test_id("stMetric").filter(has_text="Threads changed")).to_contain_text(
                    "1", timeout=WAIT_MS
                )
                page.get_by_role("button", name=re.compile(r"Restore generation \d+ \(all threads\)")).click()
                page.get_by_role("dialog").get_by_role("button", name="Restore", exact=True).click()
                expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text("Restored", timeout=WAIT_MS)
                after = sum(1 for o in _owners(db_url).values() if o == mine)
                assert after <= before, (before, after)
                expect(page.get_by_text(re.compile(r"undo point of the restore in #\d+")).first).to_be_attached()
                _shot(page, "restore_fleet")

                # pause the member from the dashboard
                _nav(page, "Backups")
                members = page.get_by_test_id("stDataFrame").first
                expect(members).to_contain_text("member#1", timeout=WAIT_MS)
                row = 0 if member.instance_id < mine else 1  # members are listed by id
                members.locator("canvas").first.click(position={"x": 14, "y": 52 + 35 * row}, force=True)
                expect(
                    page.get_by_text(re.compile(rf"Member {member.instance_id} \(.*pid {member.proc.pid}\)"))
                ).to_be_visible(timeout=WAIT_MS)
                pause = page.locator(f".st-key-member_pause_{member.instance_id} button")
                pause.click()
                expect(page.get_by_text("survives a restart")).to_be_visible(timeout=WAIT_MS)
                member.close()
                (again,) = start_members(db_url, 1, tmp_path, interval="3600")
                restarted.append(again)
                if not _paused(db_url, again.instance_id):
                    with psycopg.connect(db_url) as conn:
                        kept = conn.execute("SELECT name, paused FROM hybrid_saver.saver_settings").fetchall()
                        names = conn.execute("SELECT id, name, stopped_at FROM hybrid_saver.instances").fetchall()
                    pytest.fail(f"the restarted member did not keep its pause: {kept} {names}")
                _nav(page, "Chat")  # every page says which members are paused
                expect(
                    page.get_by_text(
                        re.compile(rf"Member {again.instance_id} \(.*member#1\) has its scheduled backups")
                    )
                ).to_be_visible(timeout=WAIT_MS)
                _shot(page, "fleet_paused")
            finally:
                browser.close()
    finally:
        stop_all([member, *restarted])
