"""The dashboard's console: any command as text, or a form generated from a command's
schema; both are checked and audited as `dashboard`."""

import pytest

from commands.models import Invocation
from commands.services import commands_load
from commands.views import form_text

pytestmark = pytest.mark.django_db


@pytest.fixture
def deploy(definitions):
    definitions(
        "deploy.md",
        """
        ---
        description: Deploy
        params:
          env: {enum: [staging, prod]}
          note: {type: string}
          replicas: {type: integer, default: 2}
          force: {type: boolean}
        workflow: {steps: [{id: a, skill: noop}]}
        ---
        Deploys.
    """,
    )
    commands_load(paths=[definitions.root])


def test_the_console_runs_text_and_shows_the_pointed_error(admin_client, deploy):
    page = admin_client.get("/console/")
    assert 'data-command="deploy"' in page.content.decode()

    done = admin_client.post("/console/", {"text": "/hive:help deploy"}).content.decode()
    bad = admin_client.post("/console/", {"text": "/deploy env=qa"}).content.decode()

    assert 'data-outcome="done"' in done and "Deploys." in done
    assert 'data-code="invalid"' in bad
    assert "^^^^^^ env: &#x27;qa&#x27; is not one of" in bad
    assert list(Invocation.objects.values_list("source", flat=True)) == ["dashboard"] * 2


def test_the_generated_form_builds_quoted_text_from_the_schema(admin_client, deploy):
    form = admin_client.get("/console/deploy/").content.decode()
    assert (
        '<select name="env">' in form and 'type="number" step="1" name="replicas" value="2"' in form
    )

    sent = admin_client.post(
        "/console/deploy/", {"env": "prod", "note": 'say "hi"; rm -rf /', "replicas": "3",
                              "dry_run": "1"},
    )  # fmt: skip

    invocation = Invocation.objects.get()
    assert (
        invocation.text
        == '/deploy env="prod" --no-force note="say \\"hi\\"; rm -rf /" replicas="3"'
    )
    assert invocation.args == {"env": "prod", "note": 'say "hi"; rm -rf /', "replicas": 3,
                               "force": False}  # fmt: skip
    assert (invocation.outcome, invocation.source) == ("planned", "dashboard")
    assert 'data-outcome="planned"' in sent.content.decode()


def test_form_text_quotes_every_value():
    fields = [
        {"name": "a", "widget": "text", "value": 'x\\y"z'},
        {"name": "b", "widget": "checkbox", "value": "1"},
    ]
    assert form_text("c", fields) == '/c a="x\\\\y\\"z" --b'
