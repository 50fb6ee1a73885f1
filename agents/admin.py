from django import forms
from django.contrib import admin, messages

from agents import mailbox
from agents.identity import concurrency_problem
from agents.models import Agent, Message
from agents.services import agent_drain, agent_resume, agent_shutdown
from hive_core.errors import HiveError


class AgentForm(forms.ModelForm):
    def clean_concurrency(self) -> int:
        value = self.cleaned_data["concurrency"]
        problem = concurrency_problem(value)
        if problem:
            raise forms.ValidationError(problem)
        return value


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentForm
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
            except HiveError as exc:
                self.message_user(request, exc.message, messages.ERROR)
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


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Pending, handled and dead-lettered messages. Messages are sent by agents, the API
    and commands; here they are read, and dead ones can be sent again."""

    list_display = ["id", "kind", "sender", "recipient", "state", "deliveries", "created_at",
                    "handled_at", "short_error"]  # fmt: skip
    list_filter = ["state", "kind"]
    search_fields = ["sender", "recipient", "correlation_id", "stream_id", "kind"]
    date_hierarchy = "created_at"
    actions = ["send_again"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="error")
    def short_error(self, message: Message) -> str:
        return message.error[:80]

    @admin.action(description="Send again (dead messages, as new messages)",
                  permissions=["send_again"])  # fmt: skip
    def send_again(self, request, queryset):
        dead = list(queryset.filter(state=Message.State.DEAD).order_by("id"))
        sent = mailbox.send_many(
            [
                mailbox.Outgoing(
                    kind=m.kind,
                    to="" if m.recipient.startswith("role:") else m.recipient,
                    role=m.recipient.removeprefix("role:")
                    if m.recipient.startswith("role:")
                    else "",
                    payload=m.payload,
                    correlation_id=m.correlation_id,
                )
                for m in dead
            ],
            sender=mailbox.user_sender(request.user),
        )
        skipped = queryset.count() - len(dead)
        note = f"; {skipped} not dead, left alone" if skipped else ""
        self.message_user(request, f"sent {len(sent)} again{note}", messages.SUCCESS)

    def has_send_again_permission(self, request):
        return request.user.has_perm("agents.add_message")
