from django.contrib import admin

from agents.models import Agent


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "role",
        "status",
        "load",
        "concurrency",
        "host",
        "pid",
        "last_heartbeat",
    ]
    list_filter = ["status", "role"]
    search_fields = ["name", "role", "host"]
    # Agents register themselves; the row mirrors a live process.
    readonly_fields = [
        "status", "load", "host", "pid", "version", "started_at", "last_heartbeat",
        "created_at", "updated_at",
    ]  # fmt: skip
