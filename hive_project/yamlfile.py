"""Load YAML definition files so errors can name the file and line."""

from pathlib import Path

import yaml


class DefinitionError(ValueError):
    """A definition file is malformed; the message names the file, line and field."""


class LineDict(dict):
    """A YAML mapping that remembers the line it started on."""

    line: int = 0


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)  # resolve `<<` merge keys as SafeLoader does
    mapping = LineDict(loader.construct_pairs(node, deep=True))
    mapping.line = node.start_mark.line + 1
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
        raise DefinitionError(f"{source}{line}: not valid YAML: {problem}") from None
