"""The per-user rate of executing commands (HIVE_COMMAND_THROTTLE), one bucket for
every door a person types commands into: the API's execute and the console's forms."""

from django.conf import settings
from rest_framework.throttling import UserRateThrottle


class CommandThrottle(UserRateThrottle):
    """DRF's per-user throttle with its rate read at each request, so the API and the
    console, counting in the same cache key (`throttle_commands.execute_<user id>`),
    cannot be used one after the other to double a user's rate."""

    scope = "commands.execute"

    def get_rate(self) -> str:
        return settings.HIVE_COMMAND_THROTTLE


def command_throttle_wait(*, request) -> float | None:
    """None if `request`'s user may execute one more command now (and count it), else
    the seconds until they may."""
    throttle = CommandThrottle()
    if throttle.allow_request(request, None):
        return None
    return throttle.wait() or 1.0
