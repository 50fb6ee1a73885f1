"""Load YAML definition files so errors can name the file and line."""

from pathlib import Path

import yaml
from django.conf import settings

from hive_core.errors import Invalid
from hive_core.jsondata import MAX_DEPTH, json_problem


class DefinitionError(Invalid, ValueError):
    """A definition file is malformed; the message names the file, line and field."""


class LineDict(dict):
    """A YAML mapping that remembers the line it started on, and each key's."""

    line: int = 0
    key_lines: dict[str, int] | None = None


class _NotJSON(yaml.MarkedYAMLError):
    """Valid YAML that is not JSON data: definitions are stored and compared as JSON."""


class _TooLarge(yaml.MarkedYAMLError):
    """YAML nested too deep, or holding too many values once its aliases are expanded."""


# The YAML types that are JSON's; dates, binary, sets and ordered maps are not.
_JSON_TAGS = {
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")
}


class _LineLoader(yaml.SafeLoader):
    _depth = 0

    def compose_node(self, parent, index):
        # PyYAML composes recursively: `[[[[...` 100,000 deep was a RecursionError.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooLarge(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        # An alias is a reference, so the composed graph stays small while what it stands
        # for does not: nine anchors of nine aliases each (603 bytes) are 9**9 values that
        # every later walk (validation, JSON, the database) expands. Count before building.
        if node is not None:
            _expanded_size(node, sizes={}, depth=0, limit=settings.HIVE_DEFINITION_MAX_VALUES)
        return node

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


def _expanded_size(node: yaml.Node, *, sizes: dict, depth: int, limit: int) -> tuple[int, int]:
    """How many values `node` stands for with its aliases expanded, and how deep it is;
    `sizes` remembers each node already counted, so an anchor is walked once."""
    known = sizes.get(id(node))
    if known is None:
        if depth > MAX_DEPTH:  # also where an alias inside its own anchor ends
            raise _TooLarge(
                problem=f"nested deeper than {MAX_DEPTH} levels once aliases are expanded",
                problem_mark=node.start_mark,
            )
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        size, height = 1, 0
        for child in children:
            child_size, child_height = _expanded_size(
                child, sizes=sizes, depth=depth + 1, limit=limit
            )
            size, height = size + child_size, max(height, child_height + 1)
            if size > limit:
                raise _TooLarge(
                    problem=f"more than {limit} values once aliases are expanded "
                    "(HIVE_DEFINITION_MAX_VALUES)",
                    problem_mark=node.start_mark,
                )
        known = sizes[id(node)] = (size, height)
    if depth + known[1] > MAX_DEPTH:
        raise _TooLarge(
            problem=f"nested deeper than {MAX_DEPTH} levels once aliases are expanded",
            problem_mark=node.start_mark,
        )
    return known


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def yaml_load(path: Path) -> object:
    """Parse `path`; every mapping in the result is a LineDict."""
    return yaml_parse(definition_text_read(path, source=str(path)), source=str(path))


def definition_text_read(path: Path, *, source: str) -> str:
    """The text of the definition file `path`, refused when larger than
    HIVE_DEFINITION_MAX_BYTES (a definition is a few kilobytes; the parser holds it all)."""
    limit = settings.HIVE_DEFINITION_MAX_BYTES
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise DefinitionError(f"{source}: {exc.strerror}") from None
    if len(data) > limit:
        raise DefinitionError(f"{source}: larger than {limit} bytes (HIVE_DEFINITION_MAX_BYTES)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError(f"{source}: cannot read: {exc}") from None


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
        what = (
            "not JSON data"
            if isinstance(exc, _NotJSON)
            else "too large"
            if isinstance(exc, _TooLarge)
            else "not valid YAML"
        )
        raise DefinitionError(f"{source}{line}: {what}: {problem}") from None
