from django.apps import AppConfig


class EventsConfig(AppConfig):
    """The record of every state change (Event), how it is written and published to
    the live stream, and the names of its kinds and subjects. Every app below the
    dashboard emits through here; none imports the dashboard."""

    name = "events"
