"""Log formats: one JSON object a line for log shippers, or plain text for people.

A small stdlib Formatter rather than a dependency: the record's own fields plus
whatever a caller passed in `extra=` (the event log's run, step, agent, attempt).
"""

import json
import logging
import re
from datetime import UTC, datetime

# Every attribute a LogRecord has before `extra=` adds its own.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


# C0 controls but the tab, DEL, C1 controls, and Unicode's line and paragraph separators:
# each can end a line, move the cursor or recolour a terminal.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match) -> str:
    char = match[0]
    if char in "\n\r":
        return repr(char)[1:-1]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


class TextFormatter(logging.Formatter):
    """One record, one line: the message (with user text in it: a reject reason, a
    command, an error) has its control characters escaped, so a newline in it cannot
    forge a record of its own. A traceback still follows on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _CONTROL.sub(_escape, super().formatMessage(record))
