from django.contrib import admin, messages

from agents.models import Agent
from agents.services import AgentControlError, agent_drain, agent_resume, agent_shutdown


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "role",
        "status",
        "load",
        "concurrency",
        "node",
        "pid",
        "last_heartbeat",
    ]
    list_filter = ["status", "role"]
    search_fields = ["name", "role", "host"]
    actions = ["drain", "resume", "shutdown"]
    # Agents register themselves; the row mirrors a live process.
    readonly_fields = [
        "status", "load", "node", "host", "pid", "version", "started_at", "last_heartbeat",
        "created_at", "updated_at",
    ]  # fmt: skip

    def _control(self, request, queryset, service, done: str) -> None:
        for agent in queryset:
            try:
                service(agent=agent)
            except AgentControlError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"{agent.name}: {done}", messages.SUCCESS)

    @admin.action(description="Drain: finish running steps, take no new ones",
                  permissions=["change"])  # fmt: skip
    def drain(self, request, queryset):
        self._control(request, queryset, agent_drain, "draining")

    @admin.action(description="Resume taking steps", permissions=["change"])
    def resume(self, request, queryset):
        self._control(request, queryset, agent_resume, "resumed")

    @admin.action(description="Shut down after the running steps finish", permissions=["change"])
    def shutdown(self, request, queryset):
        self._control(request, queryset, agent_shutdown, "shutting down")
