"""What Hive takes as JSON data, wherever it comes from (API, command line, YAML, code)."""

import functools
import math
import re

from jsonschema import Draft202012Validator, ValidationError, validators

# Cycles (a YAML alias inside itself, a list that holds itself) end here rather than
# in a RecursionError; no definition or payload Hive takes is nested this deep.
MAX_DEPTH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def json_problem(value: object, *, at: str) -> str | None:
    """The first part of `value` that is not JSON data the database can store, as
    `at.path: why`, or None when all of it is.

    JSON data is what `json.loads` gives for a standard document: dicts with string
    keys, lists, strings, finite numbers, booleans and None. Strings must be Unicode
    text without NUL: PostgreSQL refuses a NUL in text and jsonb, and a lone surrogate
    (`"\\ud800"`, valid JSON syntax) cannot be encoded as UTF-8 at all.
    """
    return _problem(value, at=at, depth=0)


def _problem(value: object, *, at: str, depth: int) -> str | None:
    where = f"{at}: " if at else ""
    if depth > MAX_DEPTH:
        return f"{where}nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        problem = text_problem(value)
        return f"{where}{problem}" if problem else None
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where}{value} is not a finite number"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where}the key {key!r} is not a string"
            problem = text_problem(key)
            if problem:
                return f"{where}a key {problem}"
            problem = _problem(item, at=f"{at}.{key}" if at else key, depth=depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            problem = _problem(item, at=f"{at}.{i}" if at else str(i), depth=depth + 1)
            if problem:
                return problem
        return None
    return f"{where}a {type(value).__name__} is not JSON data"


def text_problem(text: str) -> str | None:
    """Why `text` is not a string Hive can store, or None."""
    if "\x00" in text:
        return "holds a NUL character (\\u0000)"
    surrogate = _SURROGATE.search(text)
    if surrogate:
        return f"holds a lone surrogate (\\u{ord(surrogate[0]):04x}), which is not Unicode text"
    return None


def text_storable(text: str) -> str:
    """`text` with what text_problem refuses as U+FFFD, for the record of refused input."""
    return _UNSTORABLE.sub("\ufffd", text)


def ecma_pattern(pattern: str) -> str:
    """A JSON Schema `pattern` (ECMA-262) as a Python regex that means the same at the
    end: ECMA's `$` matches only at the end of the text, Python's also before a final
    newline, so `^[0-9.]+$` accepted "7.7.7\\n" (which became a directory name). Each
    `$` outside a character class becomes `\\Z`; everything else is left as written."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            # A `]` first in a class (`[]...]`, `[^]...]`) is a literal in Python.
            start = i + 1 + (pattern[i + 1 : i + 2] == "^")
            if pattern[start : start + 1] == "]":
                out.append(pattern[i : start + 1])
                i = start + 1
                continue
        elif char == "$":
            char = r"\Z"
        out.append(char)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def _ecma_compiled(pattern: str) -> re.Pattern:
    return re.compile(ecma_pattern(pattern))


def _pattern_keyword(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not _ecma_compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# Every JSON Schema Hive checks data against (params of workflows, commands and skills,
# definition files): Draft 2020-12 with `pattern` read as ECMA-262 reads it.
SchemaValidator = validators.extend(Draft202012Validator, {"pattern": _pattern_keyword})
