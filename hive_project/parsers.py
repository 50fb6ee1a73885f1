"""The API's only parser: JSON, refused when it could hurt the server or the database."""

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Deeper than any request Hive takes; Python's json would recurse until it failed.
MAX_JSON_DEPTH = 32


class HiveJSONParser(JSONParser):
    """JSON bodies, refused with a 400 when nested deeper than MAX_JSON_DEPTH or holding
    a NUL character (PostgreSQL cannot store one in text or jsonb). Bodies larger
    than DATA_UPLOAD_MAX_MEMORY_SIZE never get here (api_exception_handler: 413)."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read()
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.loads(raw.decode(encoding))
        except RecursionError:
            raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        _json_check(data, depth=0)
        return data


def _json_check(value, *, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ParseError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ParseError("JSON strings may not hold NUL (\\u0000) characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            _json_check(key, depth=depth)
            _json_check(item, depth=depth + 1)
    elif isinstance(value, list):
        for item in value:
            _json_check(item, depth=depth + 1)
