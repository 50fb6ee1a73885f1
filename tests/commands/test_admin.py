"""Commands are edited in admin as their files would be: saving re-validates the
whole and makes a new version; the audit is read only."""

import pytest
from django.urls import reverse

from commands.models import Command, Invocation
from commands.services import command_execute, commands_load

pytestmark = pytest.mark.django_db


@pytest.fixture
def hello(definitions):
    definitions(
        "hello.md",
        """
        ---
        description: Say hello
        params: {who: {type: string}}
        workflow: {steps: [{id: greet, skill: noop, with: {hi: "{{ params.who }}"}}]}
        ---
        Greets someone.
    """,
    )
    commands_load(paths=[definitions.root])
    return Command.objects.get(name="hello")


def form_data(command: Command, **changes) -> dict:
    data = {
        "description": command.description, "argument_hint": command.argument_hint,
        "params": '{"who": {"type": "string"}}', "permission": command.permission,
        "approval": command.approval, "overlap": command.overlap,
        "overlap_key": command.overlap_key, "enabled": "on", "body": command.body,
        "workflow_definition": '{"steps": [{"id": "greet", "skill": "noop"}]}',
    }  # fmt: skip
    return {**data, **changes}


def test_saving_in_admin_validates_and_makes_a_new_version(admin_client, hello):
    url = reverse("admin:commands_command_change", args=[hello.pk])

    broken = admin_client.post(url, form_data(
        hello, workflow_definition='{"steps": [{"id": "greet", "skill": "nope"}]}'))  # fmt: skip
    assert broken.status_code == 200
    assert "admin /hello: step &#x27;greet&#x27;: skill: unknown skill &#x27;nope&#x27;" in (
        broken.content.decode()
    )
    assert Command.objects.get(pk=hello.pk).version == 1

    saved = admin_client.post(url, form_data(hello, description="Say hello, loudly",
                                             approval="params.who == 'boss'"))  # fmt: skip
    assert saved.status_code == 302
    command = Command.objects.get(pk=hello.pk)
    assert (command.version, command.description, str(command.workflow)) == (
        2,
        "Say hello, loudly",
        "cmd:hello@2",
    )
    assert [s["id"] for s in command.workflow.spec["steps"]] == ["approval", "greet"]


def test_the_admin_lists_commands_and_the_read_only_audit(admin_client, hello, admin_user):
    command_execute(text="/hello who=x", user=admin_user, source="api")
    invocation = Invocation.objects.get()

    assert admin_client.get(reverse("admin:commands_command_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:commands_invocation_changelist")).status_code == 200
    detail = admin_client.get(reverse("admin:commands_invocation_change", args=[invocation.pk]))
    assert detail.status_code == 200 and 'name="outcome"' not in detail.content.decode()
    periodic = admin_client.get(reverse("admin:django_celery_beat_periodictask_changelist"))
    assert periodic.status_code == 200


def test_the_reload_action_syncs_the_definition_files(admin_client, hello, definitions):
    definitions(
        "hello.md",
        """
        ---
        description: Say hello twice
        workflow: {steps: [{id: greet, skill: noop}]}
        ---
    """,
    )
    definitions("broken.md", "---\nworkflow: {steps: [{id: a, skill: no.such}]}\n---\n")

    response = admin_client.post(
        reverse("admin:commands_command_changelist"),
        {"action": "reload", "_selected_action": [hello.pk]},
        follow=True,
    )

    page = response.content.decode()
    assert Command.objects.get(name="hello").description == "Say hello twice"
    assert "/hello updated to v2" in page
    assert "broken.md" in page and "no.such" in page


def test_the_admin_sets_a_commands_priority_and_timeout_as_its_file_would(admin_client, hello):
    url = reverse("admin:commands_command_change", args=[hello.pk])

    broken = admin_client.post(url, form_data(hello, priority="12"))
    saved = admin_client.post(url, form_data(hello, priority="5", timeout="30"))

    assert "admin /hello: priority: 12 is greater than the maximum of 9" in broken.content.decode()
    assert saved.status_code == 302
    command = Command.objects.get(pk=hello.pk)
    assert (command.version, command.priority, command.timeout) == (2, 5, 30)
