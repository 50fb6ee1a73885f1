"""Each built-in skill: its happy path against real programs and servers, and its bad input."""

import hashlib
import json
import sys

import pytest

from agents.skills import SkillContext, SkillError, SkillInputError, skill, skill_execute
from agents.skills.registry import skill_get
from tests.httpserver import StubServer, json_reply

CTX = SkillContext(agent="tester", idempotency_key="run-1:build:2")


def run(name, **inputs):
    return skill_execute(name, inputs, context=CTX)


# --- registry --------------------------------------------------------------------


def test_inputs_are_validated_against_the_schema_before_the_skill_runs():
    with pytest.raises(SkillInputError) as caught:
        run("sleep", seconds=-1)

    assert str(caught.value) == "sleep: inputs.seconds: -1 is less than the minimum of 0"
    assert caught.value.retryable is False


def test_an_unknown_skill_is_an_input_error():
    with pytest.raises(SkillInputError, match="unknown skill 'teleport'"):
        run("teleport")


def test_a_skill_with_a_broken_schema_is_refused_at_registration():
    with pytest.raises(ValueError, match="skill 'bad': invalid params schema"):
        skill("bad", params={"type": "no-such-type"})


def test_skills_from_hive_skill_modules_are_registered():
    # tests/skills_extra.py is named in HIVE_SKILL_MODULES by tests/settings.py.
    assert run("test.upper", text="hive") == {"text": "HIVE"}


# --- noop and sleep ---------------------------------------------------------------


def test_noop_returns_its_inputs():
    assert run("noop", a=1, b=["x"]) == {"a": 1, "b": ["x"]}


def test_sleep_waits():
    assert run("sleep", seconds=0.01) == {"slept": 0.01}
    with pytest.raises(SkillInputError, match="inputs: 'seconds' is a required property"):
        run("sleep")


# --- http.request ----------------------------------------------------------------


@pytest.fixture
def api(settings):
    server = StubServer(
        lambda r: (
            json_reply({"path": r.path, "got": json.loads(r.body or b"null")}, 201)
            if r.path != "/fail"
            else json_reply({"error": "down"}, 503)
        )
    ).start()
    settings.HIVE_HTTP_ALLOWED_HOSTS = [f"127.0.0.1:{server.server.server_address[1]}"]
    yield server
    server.stop()


def test_http_request_sends_json_and_parses_the_json_reply(api):
    result = run("http.request", method="POST", url=f"{api.url}/deploy", json={"v": "1.4.0"})

    assert result["status"] == 201
    assert result["body"] == {"path": "/deploy", "got": {"v": "1.4.0"}}
    assert result["headers"]["content-type"] == "application/json"
    assert api.requests[0].headers["Idempotency-Key"] == "run-1:build:2"


def test_http_request_refuses_hosts_not_on_the_allow_list(api):
    with pytest.raises(SkillInputError) as caught:
        run("http.request", url="http://169.254.169.254/latest/meta-data/")

    assert "host '169.254.169.254' is not in HIVE_HTTP_ALLOWED_HOSTS" in str(caught.value)
    assert api.requests == []


def test_http_request_allows_a_host_on_another_port_only_when_listed(api, settings):
    settings.HIVE_HTTP_ALLOWED_HOSTS = ["127.0.0.1:1"]
    with pytest.raises(SkillInputError, match="is not in HIVE_HTTP_ALLOWED_HOSTS"):
        run("http.request", url=f"{api.url}/")


def test_http_request_server_errors_fail_and_may_be_retried(api):
    with pytest.raises(SkillError, match=r"GET .*/fail answered 503") as caught:
        run("http.request", url=f"{api.url}/fail")
    assert caught.value.retryable is True

    kept = run("http.request", url=f"{api.url}/fail", raise_for_status=False)
    assert kept["status"] == 503 and kept["body"] == {"error": "down"}


def test_http_request_bad_input_names_the_field(api):
    with pytest.raises(SkillInputError, match="inputs.method: 'STEAL' is not one of"):
        run("http.request", url=f"{api.url}/", method="STEAL")
    with pytest.raises(SkillInputError, match=r"inputs.url: 'ftp://x' does not match"):
        run("http.request", url="ftp://x")


def test_http_request_to_a_closed_port_fails_clearly(settings):
    settings.HIVE_HTTP_ALLOWED_HOSTS = ["127.0.0.1"]
    with pytest.raises(SkillError, match=r"http.request: GET http://127.0.0.1:1/ failed"):
        run("http.request", url="http://127.0.0.1:1/", timeout=2)


def test_http_request_refuses_oversized_responses(api, settings):
    settings.HIVE_HTTP_MAX_RESPONSE_BYTES = 10
    with pytest.raises(SkillError, match="larger than HIVE_HTTP_MAX_RESPONSE_BYTES"):
        run("http.request", url=f"{api.url}/big")


# --- shell.run -------------------------------------------------------------------


@pytest.fixture
def commands(settings):
    settings.HIVE_SHELL_COMMANDS = {
        "echo": ["echo", "hello", "{name}"],
        "fail": [sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"],
        "slow": {"argv": [sys.executable, "-c", "import time; time.sleep(5)"], "timeout": 0.5},
        "deploy": {
            "argv": ["echo", "deploying", "{env}"],
            "params": {"properties": {"env": {"enum": ["staging", "prod"]}}},
        },
    }


def test_shell_run_runs_the_configured_argv_with_the_arguments(commands):
    result = run("shell.run", command="echo", args={"name": "hive; rm -rf / $(id)"})

    # One argument, never interpreted by a shell.
    assert result == {"exit_code": 0, "stdout": "hello hive; rm -rf / $(id)\n", "stderr": ""}


def test_shell_run_refuses_commands_that_are_not_configured(commands):
    with pytest.raises(SkillInputError) as caught:
        run("shell.run", command="rm", args={})

    assert str(caught.value) == (
        "shell.run: inputs.command: 'rm' is not configured in HIVE_SHELL_COMMANDS "
        "(configured: deploy, echo, fail, slow)"
    )


def test_shell_run_validates_placeholders_by_schema(commands):
    with pytest.raises(SkillInputError, match="inputs.args: 'name' is a required property"):
        run("shell.run", command="echo", args={})
    with pytest.raises(SkillInputError, match="inputs.args: Additional properties"):
        run("shell.run", command="echo", args={"name": "x", "extra": "y"})
    with pytest.raises(SkillInputError, match=r"inputs.args.name: '--help' does not match"):
        run("shell.run", command="echo", args={"name": "--help"})
    with pytest.raises(SkillInputError, match=r"inputs.args.env: 'qa' is not one of"):
        run("shell.run", command="deploy", args={"env": "qa"})
    assert run("shell.run", command="deploy", args={"env": "prod"})["stdout"] == "deploying prod\n"


def test_shell_run_fails_on_a_non_zero_exit_with_the_last_stderr_line(commands):
    with pytest.raises(SkillError, match="shell.run: 'fail' exited with 3: boom"):
        run("shell.run", command="fail")

    assert run("shell.run", command="fail", check=False)["exit_code"] == 3


def test_shell_run_stops_commands_at_the_operators_timeout(commands):
    with pytest.raises(SkillError, match=r"shell.run: 'slow' timed out after 0.5 s"):
        run("shell.run", command="slow", timeout=60)


# --- llm.chat --------------------------------------------------------------------


@pytest.fixture
def llm(settings):
    server = StubServer(
        lambda r: json_reply(
            {
                "model": json.loads(r.body)["model"],
                "choices": [
                    {
                        "message": {"role": "assistant", "content": "Ship it."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
            }
        )
    ).start()
    settings.HIVE_LLM_BASE_URL = f"{server.url}/v1"
    settings.HIVE_LLM_API_KEY = "sk-test"
    settings.HIVE_LLM_MODEL = "tiny"
    yield server
    server.stop()


def test_llm_chat_calls_the_openai_compatible_endpoint(llm):
    result = run("llm.chat", prompt="Release 1.4.0?", system="You are a release manager.")

    assert result == {
        "content": "Ship it.",
        "model": "tiny",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    request = llm.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert json.loads(request.body)["messages"] == [
        {"role": "system", "content": "You are a release manager."},
        {"role": "user", "content": "Release 1.4.0?"},
    ]


def test_llm_chat_is_disabled_with_a_clear_error_when_unconfigured(settings):
    settings.HIVE_LLM_BASE_URL = ""
    with pytest.raises(SkillError, match="llm.chat is disabled: set HIVE_LLM_BASE_URL") as caught:
        run("llm.chat", prompt="hi")
    assert caught.value.retryable is False


def test_llm_chat_with_the_endpoint_down_fails_and_may_be_retried(settings):
    settings.HIVE_LLM_BASE_URL = "http://127.0.0.1:1/v1"
    with pytest.raises(SkillError, match=r"llm.chat: cannot reach http://127.0.0.1:1/v1") as caught:
        run("llm.chat", prompt="hi")
    assert caught.value.retryable is True


def test_llm_chat_needs_a_prompt_or_messages(llm):
    with pytest.raises(SkillInputError, match="llm.chat: inputs: "):
        run("llm.chat", temperature=0.5)
    assert skill_get("llm.chat").params["oneOf"]


# --- hash.sha256 ------------------------------------------------------------------


def test_hash_sha256_is_the_standard_digest_for_one_round():
    assert run("hash.sha256", text="abc") == {
        "digest": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "rounds": 1,
    }


def test_hash_sha256_rounds_hash_the_previous_digests_bytes():
    expected = hashlib.sha256(hashlib.sha256(hashlib.sha256(b"item 7").digest()).digest())

    assert run("hash.sha256", text="item 7", rounds=3) == {
        "digest": expected.hexdigest(),
        "rounds": 3,
    }


def test_hash_sha256_caps_the_rounds():
    with pytest.raises(SkillInputError) as caught:
        run("hash.sha256", text="x", rounds=100_001)

    assert str(caught.value) == (
        "hash.sha256: inputs.rounds: 100001 is greater than the maximum of 100000"
    )
