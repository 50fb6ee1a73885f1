"""Load YAML definition files so errors can name the file and line."""

from pathlib import Path

import yaml

from hive_project.jsondata import json_problem


class DefinitionError(ValueError):
    """A definition file is malformed; the message names the file, line and field."""


class LineDict(dict):
    """A YAML mapping that remembers the line it started on, and each key's."""

    line: int = 0
    key_lines: dict[str, int] | None = None


class _NotJSON(yaml.MarkedYAMLError):
    """Valid YAML that is not JSON data: definitions are stored and compared as JSON."""


# The YAML types that are JSON's; dates, binary, sets and ordered maps are not.
_JSON_TAGS = {
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")
}


class _LineLoader(yaml.SafeLoader):
    def construct_object(self, node, deep=False):
        if node.tag.endswith(":timestamp"):
            raise _NotJSON(
                problem=f"{node.value} is a date; quote it", problem_mark=node.start_mark
            )
        if node.tag not in _JSON_TAGS:
            raise _NotJSON(problem=f"{node.tag} is not a JSON type", problem_mark=node.start_mark)
        try:
            value = super().construct_object(node, deep=deep)
        except ValueError:  # an int of more digits than Python converts
            raise _NotJSON(problem="the number is too long", problem_mark=node.start_mark) from None
        # A scalar is a leaf: json_problem names what is wrong with it, if anything.
        problem = json_problem(value, at="") if isinstance(node, yaml.ScalarNode) else None
        if problem:
            raise _NotJSON(problem=problem, problem_mark=node.start_mark)
        return value


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)  # resolve `<<` merge keys as SafeLoader does
    pairs = loader.construct_pairs(node, deep=True)
    for (key_node, _), (key, _) in zip(node.value, pairs, strict=True):
        if not isinstance(key, str):
            shown = key_node.value or "null" if isinstance(key_node, yaml.ScalarNode) else "[...]"
            problem = f"the key {shown} is not a string; quote it"
            raise _NotJSON(problem=problem, problem_mark=key_node.start_mark)
    mapping = LineDict(pairs)
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {key: key_node.start_mark.line + 1 for (key_node, _), (key, _) in
                         zip(node.value, pairs, strict=True)}  # fmt: skip
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def yaml_load(path: Path) -> object:
    """Parse `path`; every mapping in the result is a LineDict."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DefinitionError(f"{path}: {exc.strerror}") from None
    return yaml_parse(text, source=str(path))


def yaml_parse(text: str, *, source: str, first_line: int = 1) -> object:
    """Parse YAML `text` from `source`, whose first line is line `first_line` of the file
    (a markdown file's frontmatter starts on line 2)."""
    try:
        # Blank lines in front keep every line number the file's own.
        return yaml.load("\n" * (first_line - 1) + text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        what = "not JSON data" if isinstance(exc, _NotJSON) else "not valid YAML"
        raise DefinitionError(f"{source}{line}: {what}: {problem}") from None
