"""Browser tests: Debian's Chromium driven by Playwright (the Python package, sync API),
headless, against the suite's daphne and real agents. Without Chromium they are
skipped loudly (see tests/conftest.py's summary line), or fail when
HIVE_REQUIRE_BROWSER=1 (CI installs Chromium and sets it)."""

import contextlib
import os
import shutil
import textwrap

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from commands.services import commands_load

BROWSER_MISSING = "no Chromium: the browser tests did not run (apt-get install -y chromium)"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = settings.VAR_DIR / "screenshots"
USER, PASSWORD = "e2e-admin", "pw-e2e-admin"
# Playwright waits this long for a page to show something, unless told otherwise.
TIMEOUT_MS = 15_000


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("HIVE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"HIVE_REQUIRE_BROWSER=1 but {BROWSER_MISSING}", pytrace=False)
    pytest.skip(BROWSER_MISSING)


@contextlib.contextmanager
def chromium_browser():
    """Debian's Chromium driven by Playwright, closed on the way out."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


@pytest.fixture(autouse=True)
def _django_beside_playwright(monkeypatch):
    # Playwright's sync API keeps an asyncio loop in this thread; the tests' own
    # database calls are synchronous and between page calls, which Django cannot tell.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@contextlib.contextmanager
def logged_in_page(browser, live_server_url: str, username: str, password: str):
    """A page of its own browser context, logged in through the login form."""
    context = browser.new_context(base_url=live_server_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto("/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server_url}/")
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(browser, live_server_url, transactional_db):
    """A logged-in page (through the login form) of a staff user."""
    get_user_model().objects.create_superuser(USER, password=PASSWORD)
    with logged_in_page(browser, live_server_url, USER, PASSWORD) as page:
        yield page


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def wait_live(page) -> None:
    """Until the page's socket is open and it has caught up once."""
    page.wait_for_selector("body[data-live=on][data-synced]")


@pytest.fixture
def ui_command(tmp_path, settings):
    """/ui:chain seconds=S: a sleep then a noop, on the agents of these tests."""
    root = tmp_path / "commands"
    (root / "ui").mkdir(parents=True)
    (root / "ui" / "chain.md").write_text(
        textwrap.dedent("""
        ---
        description: Sleep, then say done
        params:
          seconds: {type: number, minimum: 0, maximum: 5, default: 1}
        workflow:
          steps:
            - {id: nap, skill: sleep, with: {seconds: "{{ params.seconds }}"}}
            - {id: done, skill: noop, needs: [nap], with: {ok: true}}
        ---
        Sleeps, then says done.
        """).lstrip()
    )
    settings.HIVE_COMMAND_DIRS = [root]
    commands_load(paths=[root])
