"""Issue 15 #19(a): every HTML page carries a strict Content-Security-Policy, and the
pages still work under it in a real browser (no inline script or style is refused)."""

import pytest
from django.contrib.auth import get_user_model

from commands.services import commands_load
from coordination.models import Run
from tests.e2e import conftest as e2e

# The browser suite's fixtures: its Chromium, and a page logged in as a superuser.
browser, page, _django_beside_playwright = e2e.browser, e2e.page, e2e._django_beside_playwright

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
SIGNED_IN_PAGES = [
    "/",
    "/agents/",
    "/runs/",
    "/runs/{run}/",
    "/messages/",
    "/console/",
    "/console/demo:release/",
    "/token/",
    "/admin/",
    "/admin/django_celery_beat/periodictask/",
    "/admin/django_celery_beat/periodictask/add/",
    "/api/docs/",
]
ANONYMOUS_PAGES = ["/accounts/login/", "/admin/login/"]


def directives(header: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


@pytest.fixture
def a_run(make_workflow, attackers):
    workflow = make_workflow([{"id": "only", "skill": "noop"}])
    return Run.objects.create(workflow=workflow, state="running", created_by=attackers["admin"])


@pytest.mark.parametrize("path", SIGNED_IN_PAGES)
def test_every_signed_in_page_carries_the_strict_policy(client, attackers, a_run, path):
    commands_load()
    client.force_login(attackers["admin"])
    response = client.get(path.format(run=a_run.pk))
    assert response.status_code == 200 and "text/html" in response["Content-Type"]
    assert directives(response["Content-Security-Policy"]) == directives(POLICY)


@pytest.mark.parametrize("path", ANONYMOUS_PAGES)
def test_the_login_pages_carry_the_strict_policy(client, db, path):
    response = client.get(path)
    assert response.status_code == 200
    assert directives(response["Content-Security-Policy"]) == directives(POLICY)


def test_the_api_docs_script_is_a_file_of_the_same_origin_not_inline(client, attackers):
    client.force_login(attackers["admin"])
    body = client.get("/api/docs/").content.decode()
    assert "<script>" not in body and "<style>" not in body
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()
    # Nor an image from validator.swagger.io, which img-src 'self' would refuse.
    assert '"validatorUrl": null' in script.content.decode()


# --- In Chromium: no violation, and each page still does its work ----------------

# Runs in every document before its own scripts: records each refused resource.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${where}`);
});
"""


@pytest.fixture
def watched(page):
    """The logged-in page, recording CSP violations from events and the console."""
    console = []
    page.on(
        "console",
        lambda m: console.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.context.add_init_script(RECORD_VIOLATIONS)
    page.console_violations = console
    return page


def violations(page) -> list[str]:
    return [*page.evaluate("window.cspViolations"), *page.console_violations]


def test_the_dashboard_pages_work_in_chromium_with_no_violation(watched, make_workflow):
    page = watched
    user = get_user_model().objects.get(username="e2e-admin")
    run = Run.objects.create(
        workflow=make_workflow([{"id": "only", "skill": "noop"}]), state="running", created_by=user
    )
    for path in ["/", "/agents/", "/runs/", f"/runs/{run.pk}/", "/messages/", "/token/"]:
        page.goto(path)
        # The live script ran and its WebSocket (connect-src 'self') is open.
        page.wait_for_selector("body[data-live=on][data-synced]")
        assert violations(page) == [], path


def test_the_console_completes_a_command_with_no_violation(watched):
    page = watched
    page.goto("/console/")
    page.wait_for_selector("body[data-console-ready]")
    page.fill("#console-text", "/hive:he")
    page.wait_for_selector('#suggestions li[data-suggestion="/hive:help "]')
    # A command's result is HTML put in the page by the script.
    page.fill("#console-text", "/hive:help")
    page.click("#console-run")
    page.wait_for_selector("#console-result .result")
    assert violations(page) == []


def test_the_admin_works_with_no_violation(watched):
    from django_celery_beat.models import CrontabSchedule

    page = watched
    CrontabSchedule.objects.create(minute="0", hour="4")
    for path in ["/admin/", "/admin/django_celery_beat/periodictask/"]:
        page.goto(path)  # returns once the page has loaded: a refused script is refused
        assert violations(page) == [], path
        page.wait_for_selector("#content-main")
    page.goto("/admin/django_celery_beat/periodictask/add/")
    assert violations(page) == []
    # django-celery-beat's script (inline in its template, a file here) hides the
    # crontab's translation field and reads the chosen crontab in words.
    page.wait_for_selector(".field-crontab_translation", state="hidden")
    page.select_option("#id_crontab", index=1)
    help_text = page.inner_text(".field-crontab .help")
    assert "Translation: At 04:00" in help_text, help_text
    assert violations(page) == []


def test_the_api_docs_render_their_operations_with_no_violation(watched):
    page = watched
    page.goto("/api/docs/")
    assert violations(page) == []
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    assert page.locator(".opblock").count() > 10
    page.click(".opblock-summary-path >> nth=0")  # an operation opens
    page.wait_for_selector(".opblock-body")
    assert violations(page) == []


def test_the_login_page_works_with_no_violation(browser, live_server_url, transactional_db):
    context = browser.new_context(base_url=live_server_url)
    context.add_init_script(RECORD_VIOLATIONS)
    login = context.new_page()
    login.console_violations = []
    login.on("console", lambda m: "Content Security Policy" in m.text and
             login.console_violations.append(m.text))  # fmt: skip
    for path in ["/accounts/login/", "/admin/login/"]:
        login.goto(path)
        login.wait_for_selector("input[name=password]")
        assert violations(login) == [], path
    context.close()
