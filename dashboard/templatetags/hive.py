import json

from django import template

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
