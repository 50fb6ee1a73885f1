"""The parser over a table of valid and invalid inputs: tokens, quoting, flags,
positional arguments, coercion by the schema, and errors that point at the token."""

import pytest

from commands.parser import ParseError, bind, parse, pointed

SCHEMA = {
    "type": "object",
    "properties": {
        "version": {"type": "string", "maxLength": 20},
        "env": {"enum": ["staging", "prod"], "default": "staging"},
        "force": {"type": "boolean"},
        "skip_tests": {"type": "boolean"},
        "count": {"type": "integer", "minimum": 1},
        "ratio": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "note": {"type": "string", "maxLength": 200},
        "level": {"enum": [1, 2, 3]},
        "meta": {"type": "object"},
    },
    "required": ["version"],
    "additionalProperties": False,
}
HINT = "<version> [env]"


def run(text: str, *, hint: str = HINT, schema: dict = SCHEMA) -> dict:
    return bind(parse(text), schema=schema, hint=hint, command="release")


VALID = [
    ("/release version=1.4", {"version": "1.4", "env": "staging"}),
    ("/release 1.4 prod", {"version": "1.4", "env": "prod"}),
    ("/release env=prod 1.4", {"version": "1.4", "env": "prod"}),  # positional fills the gap
    ('/release version="1.4 beta"', {"version": "1.4 beta", "env": "staging"}),
    ("/release version='1.4 beta'", {"version": "1.4 beta", "env": "staging"}),
    ('/release "1.4 beta"', {"version": "1.4 beta", "env": "staging"}),
    (
        '/release 1.4 note="say \\"hi\\" \\\\ bye"',
        {"version": "1.4", "env": "staging", "note": 'say "hi" \\ bye'},
    ),
    ("/release 1.4 note=don't", {"version": "1.4", "env": "staging", "note": "don't"}),
    ("/release 1.4 --force", {"version": "1.4", "env": "staging", "force": True}),
    ("/release 1.4 --no-force", {"version": "1.4", "env": "staging", "force": False}),
    ("/release 1.4 --skip-tests", {"version": "1.4", "env": "staging", "skip_tests": True}),
    ("/release 1.4 skip-tests=yes", {"version": "1.4", "env": "staging", "skip_tests": True}),
    ("/release 1.4 force=off", {"version": "1.4", "env": "staging", "force": False}),
    (
        "/release 1.4 count=3 ratio=0.5",
        {"version": "1.4", "env": "staging", "count": 3, "ratio": 0.5},
    ),
    ("/release 1.4 ratio=2", {"version": "1.4", "env": "staging", "ratio": 2}),
    ("/release 1.4 tags=a,b,c", {"version": "1.4", "env": "staging", "tags": ["a", "b", "c"]}),
    ("/release 1.4 tags='[\"x y\"]'", {"version": "1.4", "env": "staging", "tags": ["x y"]}),
    ("/release 1.4 tags=", {"version": "1.4", "env": "staging", "tags": []}),
    ("/release 1.4 level=2", {"version": "1.4", "env": "staging", "level": 2}),
    ('/release 1.4 meta={"a":1}', {"version": "1.4", "env": "staging", "meta": {"a": 1}}),
    ("/release 1.4 --force=false", {"version": "1.4", "env": "staging", "force": False}),
    ("/RELEASE 1.4", {"version": "1.4", "env": "staging"}),
    ("  /release\t1.4  ", {"version": "1.4", "env": "staging"}),
    # Unicode is text like any other.
    (
        "/release 1.4 note=日本語のメモ",
        {"version": "1.4", "env": "staging", "note": "日本語のメモ"},
    ),
    ("/release 1.4 note=🚀", {"version": "1.4", "env": "staging", "note": "🚀"}),
    ("/release ünï", {"version": "ünï", "env": "staging"}),
    # Shell metacharacters are plain text: nothing here is ever run.
    ("/release 1.4 note=$(rm -rf /)", None),  # split on the space: see INVALID
    (
        '/release 1.4 note="$(rm -rf /); `id` | cat > /etc/passwd && echo $HOME"',
        {
            "version": "1.4",
            "env": "staging",
            "note": "$(rm -rf /); `id` | cat > /etc/passwd && echo $HOME",
        },
    ),
    ("/release 1.4;reboot", {"version": "1.4;reboot", "env": "staging"}),
    ("/release 1.4 note=a|b&c>d<e", {"version": "1.4", "env": "staging", "note": "a|b&c>d<e"}),
    # After `--` everything is positional, even what looks like a flag.
    ("/release -- --force", {"version": "--force", "env": "staging"}),
    ("/release -- env=prod", {"version": "env=prod", "env": "staging"}),
    ("/release -5", {"version": "-5", "env": "staging"}),
]


@pytest.mark.parametrize(("text", "expected"), [v for v in VALID if v[1] is not None])
def test_valid_inputs_bind_to_typed_params(text, expected):
    assert run(text) == expected


def test_the_name_and_namespace_and_raw_arguments_are_parsed():
    parsed = parse('/ops:deploy  web  env="prod 1"  ')

    assert parsed.name == "ops:deploy"
    assert parsed.arguments == 'web  env="prod 1"'
    assert not parsed.dry_run


def test_dry_run_is_a_flag_of_every_command():
    parsed = parse("/release 1.4 --dry-run")

    assert parsed.dry_run and not parsed.flags
    assert bind(parsed, schema=SCHEMA, hint=HINT) == {"version": "1.4", "env": "staging"}


INVALID = [
    # (text, the exact message, the text under the carets)
    ("/release version=1.4 env=qa", "env: 'qa' is not one of ['staging', 'prod']", "env=qa"),
    ("/release 1.4 qa", "env: 'qa' is not one of ['staging', 'prod']", "qa"),
    ("release 1.4", "a command starts with / and its name, e.g. /hive:help", "release"),
    ("", "a command starts with / and its name, e.g. /hive:help", " "),
    ("/", "a command name is /name or /namespace:name (letters, digits, _ and -)", "/"),
    (
        "/re$lease",
        "a command name is /name or /namespace:name (letters, digits, _ and -)",
        "/re$lease",
    ),
    ('/release version="1.4', 'unbalanced quote: the " opened here is never closed', '"1.4'),
    ("/release 'abc", "unbalanced quote: the ' opened here is never closed", "'abc"),
    (
        "/release 1.4 --bogus",
        "unknown flag --bogus (known: --force, --skip_tests, --dry-run)",
        "--bogus",
    ),
    ("/release 1.4 --env", "--env is not a flag: give env=<value>", "--env"),
    (
        "/release 1.4 colour=red",
        "unknown argument 'colour' (known: count, env, force, level, meta, note, ratio, "
        "skip_tests, tags, version)",
        "colour=red",
    ),
    (
        "/release 1.4 prod extra",
        "unexpected argument 'extra': this command takes 2 positional arguments (version, env) "
        "(usage: /release <version> [env])",
        "extra",
    ),
    ("/release env=prod", "missing argument 'version' (usage: /release <version> [env])", " "),
    ("/release version=1.4 version=1.5", "version is given twice", "version=1.5"),
    ("/release 1.4 count=three", "count: 'three' is not of type 'integer'", "count=three"),
    ("/release 1.4 count=0", "count: 0 is less than the minimum of 1", "count=0"),
    ("/release 1.4 count=1.5", "count: '1.5' is not of type 'integer'", "count=1.5"),
    ("/release 1.4 force=maybe", "force: 'maybe' is not of type 'boolean'", "force=maybe"),
    ("/release 1.4 ratio=nan", "ratio: 'nan' is not of type 'number'", "ratio=nan"),
    ("/release 1.4 ratio=1e400", "ratio: '1e400' is not of type 'number'", "ratio=1e400"),
    ("/release 1.4 ratio=" + "9" * 400, f"ratio: '{'9' * 299}…", "ratio=99"),
    ("/release 1.4 count=" + "9" * 5000, f"count: '{'9' * 299}…", "count=99"),
    ("/release 1.4 tags=a,b,c,d", "tags: has 4 items; the limit is 3", "tags=a,b,c,d"),
    ("/release " + "x" * 30, "version: is 30 characters long; the limit is 20", "x" * 30),
    (
        "/release 1.4 note=$(rm -rf /)",
        "unexpected argument '/)': this command takes 2 positional arguments (version, env) "
        "(usage: /release <version> [env])",
        "/)",
    ),
    ("/release 1.4 nul=\x00", "control character U+0000 is not allowed", " "),
    ("/release 1.4 b=\udcff", "lone surrogate U+DCFF is not allowed", " "),
]


@pytest.mark.parametrize(("text", "message", "under"), INVALID)
def test_invalid_inputs_fail_with_the_exact_error_pointing_at_the_token(text, message, under):
    with pytest.raises(ParseError) as caught:
        run(text)

    error = caught.value
    assert error.message == message
    shown, carets = str(error).split("\n")
    assert carets.endswith(f" {message}")
    column = carets.index("^")
    width = len(carets.split(" ", column + 1)[0].strip()) if column else len(carets.split()[0])
    assert shown[column : column + width].rstrip() == under[:width].rstrip()


def test_the_error_of_the_issue_reads_as_written():
    with pytest.raises(ParseError) as caught:
        run("/release version=1.4 env=qa")

    assert str(caught.value) == (
        "/release version=1.4 env=qa\n"
        "                     ^^^^^^ env: 'qa' is not one of ['staging', 'prod']"
    )


def test_carets_align_under_wide_characters():
    with pytest.raises(ParseError) as caught:
        run("/release 日本 env=qa")

    _, carets = str(caught.value).split("\n")
    # 日本 takes four columns in a terminal: the carets move two to the right.
    assert carets.index("^") == len("/release 日本 ") + 2


def test_a_very_long_text_is_refused_and_shown_cut_around_the_token():
    with pytest.raises(ParseError, match=r"the command is 20009 characters long; the limit is"):
        parse("/release " + "a" * 20_000)

    long_note = "n" * 150
    with pytest.raises(ParseError) as caught:
        run(f"/release 1.4 note={long_note} env=qa")
    shown, carets = str(caught.value).split("\n")
    assert shown.startswith("…") and len(shown) <= 110
    assert shown[carets.index("^") :].startswith("env=qa")


def test_positional_words_fill_a_variadic_string_as_typed():
    schema = {"type": "object", "properties": {"text": {"type": "string"}}}

    params = bind(parse('/review  fix   the "typo" don\'t'), schema=schema, hint="<text...>")

    assert params == {"text": 'fix   the "typo" don\'t'}


def test_the_last_array_slot_takes_the_remaining_positionals():
    params = run("/release 1.4 prod a b", hint="<version> [env] [tags...]")

    assert params["tags"] == ["a", "b"]


def test_an_open_schema_takes_unknown_keys_as_strings():
    params = bind(parse("/x anything=goes"), schema={"type": "object"})

    assert params == {"anything": "goes"}


def test_pointed_marks_the_end_of_the_text_for_a_missing_argument():
    assert pointed("/x", 2, 3, "missing") == "/x\n  ^ missing"
