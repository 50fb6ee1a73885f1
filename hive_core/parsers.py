"""The API's only parser: JSON, refused when it could hurt the server or the database."""

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from hive_core.jsondata import json_problem

# Deeper than any request Hive takes; Python's json would recurse until it failed.
MAX_JSON_DEPTH = 32


class HiveJSONParser(JSONParser):
    """JSON bodies, refused with a 400 when nested deeper than MAX_JSON_DEPTH or holding
    anything that is not JSON data the database can store (json_problem: a NUL, a lone
    surrogate, NaN), so no view ever sees it. Bodies larger than
    DATA_UPLOAD_MAX_MEMORY_SIZE never get here (api_exception_handler: 413)."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read()
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.loads(raw.decode(encoding))
        except RecursionError:
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        _depth_check(data, depth=0)
        problem = json_problem(data, at="")
        if problem:
            raise ParseError(f"JSON data not accepted - {problem}")
        return data


def _depth_check(value, *, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            _depth_check(item, depth=depth + 1)
