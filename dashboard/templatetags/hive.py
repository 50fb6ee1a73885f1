import json

from django import template
from django.utils.html import json_script

from events.kinds import client_names

register = template.Library()


@register.filter
def duration(step) -> str:
    """How long a step ran (so far, while running): `1.23 s`; empty before it started."""
    from django.utils import timezone

    if not step or not step.started_at:
        return ""
    end = step.finished_at or timezone.now()
    return f"{(end - step.started_at).total_seconds():.2f} s"


@register.filter
def pretty(value) -> str:
    """JSON as people read it (inputs, outputs)."""
    if value is None:
        return ""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def compact(value) -> str:
    """JSON on one line (event data)."""
    return json.dumps(value, sort_keys=True, default=str)


@register.simple_tag
def event_names() -> str:
    """The event families' states and subject types for live.js, as a JSON script
    (data, not code: the Content-Security-Policy lets it be)."""
    return json_script(client_names(), "hive-event-names")
