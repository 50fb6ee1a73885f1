"""Log formats: one JSON object a line for log shippers, or plain text for people.

A small stdlib Formatter rather than a dependency: the record's own fields plus
whatever a caller passed in `extra=` (the event log's run, step, agent, attempt).
"""

import json
import logging
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
