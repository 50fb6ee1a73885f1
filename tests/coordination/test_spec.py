"""Workflow definitions: every kind of malformed spec gives its error and saves nothing."""

import pytest

from coordination.models import Workflow
from coordination.services import workflow_load, workflow_save
from coordination.spec import SpecError, spec_validate

pytestmark = pytest.mark.django_db

GOOD = """\
name: release
params:
  type: object
  properties: {version: {type: string}}
  required: [version]
steps:
  - id: build
    skill: noop
    with: {version: "{{ params.version }}"}
  - id: test
    needs: build
    skill: noop
    foreach: [unit, e2e]
    with: {suite: "{{ item }}"}
  - id: ship
    needs: [test]
    skill: noop
    when: "params.version != '0.0.0'"
"""


def write(tmp_path, text):
    path = tmp_path / "release.yaml"
    path.write_text(text)
    return path


def test_a_good_definition_is_saved_as_version_one_with_defaults_filled_in(tmp_path):
    workflow, created = workflow_load(path=write(tmp_path, GOOD))

    assert (workflow.name, workflow.version, created) == ("release", 1, True)
    test = workflow.spec["steps"][1]
    assert test["needs"] == ["build"] and test["retries"] == 0
    assert test["on_failure"] == "fail_run"


def test_saving_the_same_definition_again_adds_no_version(tmp_path):
    workflow_load(path=write(tmp_path, GOOD))

    workflow, created = workflow_load(path=write(tmp_path, GOOD))

    assert (workflow.version, created) == (1, False)


def test_a_changed_definition_becomes_a_new_version(tmp_path):
    first, _ = workflow_load(path=write(tmp_path, GOOD))

    second, created = workflow_load(path=write(tmp_path, GOOD.replace("e2e", "smoke")))

    assert (second.version, created) == (2, True)
    assert Workflow.objects.get(pk=first.pk).spec["steps"][1]["foreach"] == ["unit", "e2e"]


@pytest.mark.parametrize(
    "change, error",
    [
        (
            ("    needs: build\n", "    needs: biuld\n"),
            ":11: step 'test': needs: unknown step 'biuld'",
        ),
        (
            ("skill: noop\n    foreach", "skill: teleport\n    foreach"),
            ":12: step 'test': skill: unknown skill 'teleport'",
        ),
        (("  - id: ship", "  - id: test"), ":15: step 'test': id: duplicate step id 'test'"),
        (
            ("    needs: [test]", "    needs: [test]\n    retries: -1"),
            ":17: step 'ship': retries: -1 is less than the minimum of 0",
        ),
        (
            ("    needs: [test]", "    needs: [test]\n    colour: red"),
            ":15: step 'ship': Additional properties are not allowed ('colour' was unexpected)",
        ),
        (
            ("{{ params.version }}", "{{ params.version "),
            ":9: step 'build': with: template error: unexpected end of template",
        ),
        (
            ("params.version != '0.0.0'", "params.version !="),
            ":18: step 'ship': when: template error:",
        ),
        (
            ("  - id: build\n", "  - id: build\n    needs: ship\n"),
            ":8: step 'build': needs: build -> ship -> test -> build is a cycle",
        ),
        (("  - id: ship", "  - id: Ship"), ":15: step 'Ship': id: 'Ship' does not match"),
        (
            ("type: object\n  properties", "type: objekt\n  properties"),
            ":3: params: invalid JSON Schema",
        ),
        (
            ("    skill: noop\n    with: {version", "    with: {version"),
            ":7: step 'build': give one of skill, sleep, sleep_until, wait_for or workflow: "
            "it gives none",
        ),
        (
            ('{suite: "{{ item }}"}', '{suite: "{{ steps.biuld.output }}"}'),
            ":14: step 'test': with: steps.biuld: no step 'biuld'",
        ),
        (
            ("params.version != '0.0.0'", "steps['build'].output and steps.nope"),
            ":18: step 'ship': when: steps.nope: no step 'nope'",
        ),
        (
            (
                'skill: noop\n    with: {version: "{{ params.version }}"}',
                "skill: sleep\n    with: {secs: 1}",
            ),
            ":9: step 'build': with: sleep takes no 'secs' (it takes seconds)",
        ),
        (
            (
                'skill: noop\n    with: {version: "{{ params.version }}"}',
                "skill: sleep\n    with: {}",
            ),
            ":9: step 'build': with: sleep needs 'seconds'",
        ),
        (
            (
                'skill: noop\n    with: {version: "{{ params.version }}"}',
                "skill: sleep\n    with: {seconds: abc}",
            ),
            ":9: step 'build': with.seconds: 'abc' is not of type 'number'",
        ),
        (
            ("[unit, e2e]", '"{{ steps.ship.output }}"'),
            ":13: step 'test': foreach: steps.ship: 'ship' is not among the steps this one needs",
        ),
    ],
)
def test_malformed_definitions_name_file_line_step_and_field(tmp_path, change, error):
    path = write(tmp_path, GOOD.replace(*change))

    with pytest.raises(SpecError) as caught:
        workflow_load(path=path)

    assert str(caught.value).startswith(f"{path}{error}"), str(caught.value)
    assert not Workflow.objects.exists()


def test_not_yaml_at_all_names_the_line(tmp_path):
    with pytest.raises(SpecError.__mro__[1], match=r"release.yaml:3: not valid YAML"):
        workflow_load(path=write(tmp_path, "steps:\n  - id: a\n   - b: [\n"))


@pytest.mark.parametrize(
    "value, error",
    [
        ("2020-01-01", "release.yaml:4: not JSON data: 2020-01-01 is a date; quote it"),
        (".nan", "release.yaml:4: not JSON data: nan is not a finite number"),
        ("{1: x, null: y}", "release.yaml:4: not JSON data: the key 1 is not a string; quote it"),
        ("{null: y}", "release.yaml:4: not JSON data: the key null is not a string; quote it"),
        ("!!binary aGk=", "release.yaml:4: not JSON data: tag:yaml.org,2002:binary is not a JSON"),
        ('"\\ud800"', "release.yaml:4: not JSON data: holds a lone surrogate (\\ud800)"),
        ("9" * 5000, "release.yaml:4: not JSON data: the number is too long"),
    ],
    ids=["date", "nan", "int-key", "null-key", "binary", "surrogate", "long-int"],
)
def test_yaml_that_is_not_json_data_names_the_line_and_saves_nothing(tmp_path, value, error):
    path = write(tmp_path, f"steps:\n  - id: a\n    skill: noop\n    with: {{x: {value}}}\n")

    with pytest.raises(SpecError.__mro__[1]) as caught:
        workflow_load(path=path)

    assert str(caught.value).startswith(f"{tmp_path}/{error}"), str(caught.value)
    assert not Workflow.objects.exists()


def test_specs_from_the_api_are_validated_the_same_way():
    with pytest.raises(SpecError, match="^api: steps: \\[\\] should be non-empty"):
        spec_validate({"steps": []}, source="api")
    with pytest.raises(SpecError, match="^api: : 'steps' is a required property|^api: 'steps'"):
        workflow_save(name="x", spec=spec_validate({}, source="api"))
