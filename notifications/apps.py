from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """Who is told of a run's outcome (failed, waiting for approval, succeeded), by
    email or a signed webhook, and each delivery's record."""

    name = "notifications"

    def ready(self) -> None:
        from coordination.leadership import leader_passes
        from notifications.services import notifications_pass

        leader_passes.register("notifications", notifications_pass)
