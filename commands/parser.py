"""Parse and bind the text of a slash command, never through a shell or `eval`.

Grammar (whitespace separates tokens; quotes group; nothing else is special):

    command    := "/" name [":" name]* token*
    token      := key "=" value | "--" flag | "--no-" flag | "--" flag "=" value
                | "--" (every later token is positional) | positional
    value      := bare | "double quoted, \\" and \\\\ escaped" | 'single quoted, literal'

A quote opens only at the start of a value (`don't` is plain text); a backslash
outside quotes escapes a quote, a backslash or a space.

Shell metacharacters (`;`, `|`, `&`, `$( )`, backticks, `>`) are plain text. Every
token keeps its position in the text, so an error points at the token that
caused it:

    /release version=1.4 env=qa
                         ^^^^^^ env: 'qa' is not one of ['staging', 'prod']

Binding maps tokens to the command's parameters: `key=value` by name (a `-` in the
key may stand for `_`), `--flag`/`--no-flag` to booleans, positional arguments in
the order of the command's `argument-hint`, and every value is coerced to the
type its JSON Schema asks for (integer, number, boolean, null, arrays split on
commas, objects as JSON) before the schema validates the whole.
"""

import json
import math
import re
import sys
import unicodedata
from dataclasses import dataclass, field

from hive_core.errors import Invalid
from hive_core.jsondata import SchemaValidator

# `\Z`, not `$`: `$` also matches before a final newline (issue 15 #14).
NAME = re.compile(r"^/([a-z0-9][a-z0-9_-]*(?::[a-z0-9][a-z0-9_-]*)*)\Z")
# What every parsable text looks like (the API schema publishes it, in ECMA-262 where
# `$` is the very end): optional leading whitespace, then `/name` ending at whitespace
# or the end. Whether the rest binds depends on the command's own params schema,
# which lives in the database; the parser does the checking.
TEXT_PATTERN = r"^\s*/[a-z0-9][a-z0-9_-]*(:[a-z0-9][a-z0-9_-]*)*(\s|$)"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*\Z")
_INTEGER = re.compile(r"^[+-]?[0-9]+\Z")
_NUMBER = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
_MAX_DIGITS = sys.get_int_max_str_digits() or sys.maxsize
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
DRY_RUN = "dry-run"
# Characters of the text shown around an error; a longer text is cut around the token.
_WINDOW = 100
# A schema message quotes the offending value; a huge value would drown the message.
_MAX_MESSAGE = 300


class ParseError(Invalid):
    """The text cannot be parsed or bound; `str()` points at the offending token.

    `message` is the problem alone, `param` the parameter it concerns (if any).
    """

    def __init__(self, message: str, *, text: str, start: int, end: int, param: str = ""):
        super().__init__(message)
        self.text, self.start, self.end, self.param = text, start, end, param

    def __str__(self) -> str:
        return pointed(self.text, self.start, self.end, self.message)


def pointed(text: str, start: int, end: int, message: str) -> str:
    """The text on one line and, under it, carets under [start, end) and the message."""
    left = max(0, min(start, len(text)) - _WINDOW // 2)
    right = max(end, start + 1, left + _WINDOW)
    shown = ("…" if left else "") + text[left:right] + ("…" if right < len(text) else "")
    offset = 1 if left else 0
    # Control characters, tabs and lone surrogates print as one space: the carets stay aligned.
    shown = "".join(" " if unicodedata.category(c) in ("Cc", "Cs") else c for c in shown)
    before = _width(shown[: offset + start - left])
    under = max(1, _width(shown[offset + start - left : offset + max(end, start + 1) - left]))
    return f"{shown}\n{' ' * before}{'^' * under} {message}"


def _width(text: str) -> int:
    """Terminal columns: wide (East Asian) characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


@dataclass(frozen=True)
class Token:
    value: str  # unquoted
    start: int
    end: int
    # For `key=value` and `--flag=value`: the key, and where the value starts.
    key: str = ""
    flag: bool = False  # `--flag`, `--no-flag`, `--flag=value`
    negated: bool = False  # `--no-flag`
    has_value: bool = False


@dataclass
class Parsed:
    text: str
    name: str  # without the slash: demo:release
    arguments: str  # the raw text after the name, for $ARGUMENTS
    keyed: list[Token] = field(default_factory=list)
    flags: list[Token] = field(default_factory=list)
    positional: list[Token] = field(default_factory=list)
    dry_run: bool = False


def parse(text: str, *, max_length: int = 10_000) -> Parsed:
    """Split `text` into the command name and its argument tokens."""
    if len(text) > max_length:
        raise ParseError(
            f"the command is {len(text)} characters long; the limit is {max_length}",
            text=text,
            start=max_length,
            end=len(text),
        )
    for i, char in enumerate(text):
        category = unicodedata.category(char)
        if category == "Cs" or (category == "Cc" and char not in "\t\n\r"):
            # A lone surrogate is what the command line makes of bytes that are not UTF-8.
            what = "lone surrogate" if category == "Cs" else "control character"
            raise ParseError(
                f"{what} U+{ord(char):04X} is not allowed", text=text, start=i, end=i + 1
            )
    tokens = _tokenize(text)
    if not tokens or not text.lstrip().startswith("/"):
        start = tokens[0].start if tokens else 0
        raise ParseError(
            "a command starts with / and its name, e.g. /hive:help",
            text=text,
            start=start,
            end=tokens[0].end if tokens else 1,
        )
    head = tokens[0]
    match = NAME.match(text[head.start : head.end].lower())
    if not match:
        raise ParseError(
            "a command name is /name or /namespace:name (letters, digits, _ and -)",
            text=text,
            start=head.start,
            end=head.end,
        )
    parsed = Parsed(text=text, name=match.group(1), arguments=text[head.end :].strip())
    options_done = False
    for token in tokens[1:]:
        if options_done:
            parsed.positional.append(_as_positional(token, text))
        elif text[token.start : token.end] == "--":
            options_done = True  # a bare `--`
        elif token.flag and token.key == DRY_RUN and not token.has_value:
            parsed.dry_run = not token.negated
        elif token.flag and token.has_value:
            parsed.keyed.append(token)
        elif token.flag:
            parsed.flags.append(token)
        elif token.key:
            parsed.keyed.append(token)
        else:
            parsed.positional.append(token)
    return parsed


def _as_positional(token: Token, text: str) -> Token:
    """After `--` every token is positional, `key=value`-looking or not."""
    if token.key or token.flag:
        return Token(
            value=_unquote(text[token.start : token.end]), start=token.start, end=token.end
        )
    return token


def quote(value: object) -> str:
    """`value` as one token of a command's text, double quoted (a string as it is, any
    other value as JSON): whatever it holds, spaces, quotes, `key=` or `--flag`, it
    stays one value."""
    text = value if isinstance(value, str) else json.dumps(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(raw: str) -> str:
    return "".join(_tokenize_one(raw, 0)[0])


def _tokenize(text: str) -> list[Token]:
    tokens, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        chars, end, eq_at = _tokenize_one(text, i)
        tokens.append(_classify("".join(chars), text[i:end], start=i, end=end, eq_at=eq_at))
        i = end
    return tokens


def _tokenize_one(text: str, i: int) -> tuple[list[str], int, int | None]:
    """Read one token from `i`: its unquoted characters, where it ends, and the index
    (in the characters) of the first `=` not inside quotes and before any quote."""
    chars: list[str] = []
    eq_at: int | None = None
    plain = True  # no quote or escape seen yet: a `=` here separates a key
    value_start = i  # a quote opens a value only here: `don't` is plain text
    while i < len(text) and not text[i].isspace():
        char = text[i]
        if char in "\"'" and i == value_start:
            plain = False
            opened, i = i, i + 1
            while True:
                if i >= len(text):
                    raise ParseError(
                        f"unbalanced quote: the {char} opened here is never closed",
                        text=text,
                        start=opened,
                        end=len(text),
                    )
                if text[i] == char:
                    i += 1
                    value_start = i  # "a"'b' is one value: ab
                    break
                if char == '"' and text[i] == "\\" and text[i + 1 : i + 2] in ('"', "\\"):
                    i += 1
                chars.append(text[i])
                i += 1
            continue
        if char == "\\" and text[i + 1 : i + 2] in ('"', "'", "\\", " "):
            plain = False
            chars.append(text[i + 1])
            i += 2
            continue
        if char == "=" and plain and eq_at is None:
            eq_at = len(chars)
            value_start = i + 1
        chars.append(char)
        i += 1
    return chars, i, eq_at


def _classify(value: str, raw: str, *, start: int, end: int, eq_at: int | None) -> Token:
    if raw.startswith("--"):
        # Any `--word` is a flag, known or not: binding names the unknown ones.
        name = value[2:eq_at] if eq_at is not None else value[2:]
        negated = eq_at is None and name.startswith("no-") and len(name) > 3
        return Token(
            value=value[eq_at + 1 :] if eq_at is not None else "",
            start=start,
            end=end,
            key=(name[3:] if negated else name) or "-",
            flag=True,
            negated=negated,
            has_value=eq_at is not None,
        )
    if eq_at is not None and _KEY.match(value[:eq_at]):
        return Token(
            value=value[eq_at + 1 :], start=start, end=end, key=value[:eq_at], has_value=True
        )
    return Token(value=value, start=start, end=end)


# --- binding to a command's parameters ----------------------------------------------


def hint_names(hint: str) -> list[str]:
    """Parameter names of an argument hint, in order: `<version> [env=staging|prod] [tags...]`."""
    names = []
    for word in hint.split():
        name = re.split(r"[=:|]", word.strip("[]<>{}()"), maxsplit=1)[0].rstrip(".")
        if _KEY.match(name):
            names.append(name)
    return names


def bind(parsed: Parsed, *, schema: dict, hint: str = "", command: str = "") -> dict:
    """The arguments of `parsed` as params for `schema`, coerced and validated."""
    text = parsed.text
    props = schema.get("properties", {})
    closed = schema.get("additionalProperties", True) is False
    usage = f" (usage: /{command or parsed.name}{' ' + hint if hint else ''})"
    values: dict = {}
    where: dict[str, Token] = {}

    def param_of(key: str, token: Token, what: str) -> str:
        for name in (key, key.replace("-", "_")):
            if name in props:
                return name
        if closed:
            raise ParseError(
                f"unknown {what} {_display(token, key)}{_known(props, what)}",
                text=text,
                start=token.start,
                end=token.end,
            )
        return key

    def put(name: str, value, token: Token) -> None:
        if name in values:
            raise ParseError(
                f"{name} is given twice", text=text, start=token.start, end=token.end, param=name
            )
        values[name], where[name] = value, token

    for token in parsed.keyed:
        name = param_of(token.key, token, "argument")
        put(name, coerce(token.value, props.get(name, {})), token)
    for token in parsed.flags:
        name = param_of(token.key, token, "flag")
        if "boolean" not in _types(props.get(name, {})):
            raise ParseError(
                f"--{token.key} is not a flag: give {name}=<value>",
                text=text,
                start=token.start,
                end=token.end,
                param=name,
            )
        put(name, not token.negated, token)
    slots = [n for n in _hint_params(hint, props) if n not in values]
    variadic = hint.rstrip("]>)} ").endswith("...")
    for i, token in enumerate(parsed.positional):
        if not slots:
            raise ParseError(
                f"unexpected argument {token.value!r}: {_positional_help(hint, props)}{usage}",
                text=text,
                start=token.start,
                end=token.end,
            )
        name = slots.pop(0)
        rest = parsed.positional[i:]
        taken = None if slots else _rest(parsed, rest, props.get(name, {}), variadic=variadic)
        if taken is not None:
            put(name, *taken)
            break
        put(name, coerce(token.value, props.get(name, {})), token)
    for name, prop in props.items():
        if name not in values and isinstance(prop, dict) and "default" in prop:
            values[name] = prop["default"]
    _validate(values, schema, where, text=text, usage=usage)
    return values


def _rest(parsed: Parsed, rest: list[Token], prop: dict, *, variadic: bool) -> tuple | None:
    """The value of the last slot and its span, when it takes the rest of the positional
    words; None when it takes one word."""
    span = Token(value="", start=rest[0].start, end=rest[-1].end)
    if "array" in _types(prop):
        # The last slot takes the rest when it is a list (each word split on commas)...
        parts = [coerce(t.value, prop) for t in rest]
        return [v for part in parts for v in (part if isinstance(part, list) else [part])], span
    if variadic and len(rest) > 1:
        # ...or when the hint says so (`<text...>`): the words, as typed.
        words = (
            " ".join(t.value for t in rest)
            if _interleaved(parsed, span)
            else parsed.text[span.start : span.end]
        )
        return coerce(words, prop), span
    return None


def _interleaved(parsed: Parsed, span: Token) -> bool:
    """Does a key=value or a flag sit among the words of a variadic argument?"""
    return any(span.start < t.start < span.end for t in [*parsed.keyed, *parsed.flags])


def _display(token: Token, key: str) -> str:
    return f"--{key}" if token.flag else repr(key)


def _known(props: dict, what: str) -> str:
    # Sorted: a schema stored as PostgreSQL jsonb does not keep its keys' order.
    if what == "flag":
        names = [f"--{n}" for n in sorted(props) if "boolean" in _types(props[n])]
        names.append(f"--{DRY_RUN}")
    else:
        names = sorted(props)
    return f" (known: {', '.join(names)})" if names else " (this command takes no arguments)"


def _hint_params(hint: str, props: dict) -> list[str]:
    names = []
    for name in hint_names(hint):
        for candidate in (name, name.replace("-", "_")):
            if candidate in props:
                names.append(candidate)
                break
    return names


def _positional_help(hint: str, props: dict) -> str:
    names = _hint_params(hint, props)
    if not names:
        return "this command takes no positional arguments; use key=value"
    return f"this command takes {len(names)} positional argument{'s'[: len(names) - 1]} " + (
        f"({', '.join(names)})"
    )


def _types(schema: dict) -> list[str]:
    """The JSON types a property allows: its `type`, or those of its enum/const values."""
    if not isinstance(schema, dict):
        return []
    kind = schema.get("type")
    if kind:
        return [kind] if isinstance(kind, str) else list(kind)
    values = schema.get("enum", [schema["const"]] if "const" in schema else [])
    found = []
    for value in values:
        name = (
            "boolean"
            if isinstance(value, bool)
            else "integer"
            if isinstance(value, int)
            else "number"
            if isinstance(value, float)
            else "null"
            if value is None
            else "string"
            if isinstance(value, str)
            else "array"
            if isinstance(value, list)
            else "object"
        )
        if name not in found:
            found.append(name)
    return found


def coerce(raw: str, schema: dict) -> object:
    """`raw` as the first type `schema` allows that it reads as; else the string, so the
    schema's own message says what is wrong."""
    types = _types(schema)
    # Text reads as anything: try the other types first.
    for kind in sorted(types, key=lambda t: t == "string"):
        if kind == "string":
            return raw
        # A number out of range stays text, as "nan" does: Python converts at most
        # sys.get_int_max_str_digits() digits to an int, and beyond 1.8e308 a float is inf.
        if kind == "integer" and _INTEGER.match(raw) and len(raw.lstrip("+-")) <= _MAX_DIGITS:
            return int(raw)
        if kind == "number" and _NUMBER.match(raw) and math.isfinite(number := float(raw)):
            return int(number) if _INTEGER.match(raw) else number
        if kind == "boolean" and raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        if kind == "null" and raw.lower() in {"", "null", "none"}:
            return None
        if kind == "array":
            if raw.startswith("["):
                try:
                    return json.loads(raw)
                except ValueError:
                    return raw
            item = schema.get("items", {}) if isinstance(schema.get("items"), dict) else {}
            return [coerce(part.strip(), item) for part in raw.split(",")] if raw else []
        if kind == "object" and raw.startswith("{"):
            try:
                return json.loads(raw)
            except ValueError:
                return raw
    return raw


def _validate(values: dict, schema: dict, where: dict, *, text: str, usage: str) -> None:
    validator = SchemaValidator(schema)
    errors = sorted(validator.iter_errors(values), key=lambda e: [str(p) for p in e.path])
    if not errors:
        return
    error = errors[0]
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required" and not path:
        missing = next(n for n in schema.get("required", []) if n not in values)
        raise ParseError(
            f"missing argument {missing!r}{usage}",
            text=text,
            start=len(text),
            end=len(text) + 1,
            param=missing,
        )
    if error.validator == "maxLength":
        message = f"is {len(error.instance)} characters long; the limit is {error.validator_value}"
    elif error.validator == "maxItems":
        message = f"has {len(error.instance)} items; the limit is {error.validator_value}"
    else:
        message = error.message
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "…"
    token = where.get(path[0]) if path else None
    start, end = (token.start, token.end) if token else (len(text), len(text) + 1)
    prefix = f"{'.'.join(path)}: " if path else ""
    raise ParseError(
        f"{prefix}{message}", text=text, start=start, end=end, param=path[0] if path else ""
    )
