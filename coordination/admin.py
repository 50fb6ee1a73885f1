import time

from django.contrib import admin, messages

from coordination.models import FlowKey, Run, StepRun, Workflow
from coordination.services import (
    run_cancel,
    run_pause,
    run_rerun,
    run_resume,
    step_approve,
    step_reject,
    step_retry,
)
from hive_core.errors import HiveError


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "source", "created_at"]
    search_fields = ["name"]
    # A version never changes: runs pin it. Save a changed definition instead.
    readonly_fields = ["name", "version", "description", "spec", "digest", "source", "created_at"]


class StepRunInline(admin.TabularInline):
    model = StepRun
    fields = [
        "key", "state", "skill", "agent", "tries", "waiting_reason", "error", "started_at",
        "finished_at",
    ]  # fmt: skip
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


def _action(service, *, target: str, done: str, description: str, permission: str):
    """An admin action applying an engine service (`service(<target>=obj, user=...)`) to
    each selected object, reporting each outcome; a refusal is reported, not raised."""

    @admin.action(description=description, permissions=[permission])
    def act(modeladmin, request, queryset) -> None:
        for obj in queryset:
            try:
                service(**{target: obj}, user=request.user)
            except HiveError as exc:
                modeladmin.message_user(request, f"{obj}: {exc}", messages.ERROR)
            else:
                modeladmin.message_user(request, f"{obj}: {done}", messages.SUCCESS)

    return act


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "id", "workflow", "state", "priority", "created_by", "created_at", "finished_at",
    ]  # fmt: skip
    list_filter = ["state", "workflow__name"]
    search_fields = ["id", "workflow__name", "created_by__username"]
    list_select_related = ["workflow", "created_by"]
    readonly_fields = [f.name for f in Run._meta.fields]
    inlines = [StepRunInline]
    actions = ["cancel", "pause", "resume", "rerun"]

    cancel = _action(run_cancel, target="run", done="cancelled", permission="change",
                     description="Cancel: stop running steps, start no more")  # fmt: skip
    pause = _action(run_pause, target="run", done="paused", permission="change",
                    description="Pause: start nothing new, let running steps finish")  # fmt: skip
    resume = _action(run_resume, target="run", done="resumed", permission="change",
                     description="Resume paused runs")  # fmt: skip
    rerun = _action(run_rerun, target="run", done="started again", permission="add",
                    description="Rerun with the same version and params")  # fmt: skip


@admin.register(StepRun)
class StepRunAdmin(admin.ModelAdmin):
    list_display = ["key", "run", "state", "skill", "agent", "tries", "finished_at"]
    list_filter = ["state", "skill"]
    search_fields = ["key", "agent"]
    list_select_related = ["run__workflow"]
    readonly_fields = [f.name for f in StepRun._meta.fields]
    actions = ["retry", "approve", "reject"]

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm("coordination.approve_steprun")

    retry = _action(step_retry, target="step", done="retrying", permission="change",
                    description="Retry a failed step and everything after it")  # fmt: skip
    approve = _action(step_approve, target="step", done="approved", permission="approve",
                      description="Approve steps waiting for approval")  # fmt: skip
    reject = _action(step_reject, target="step", done="rejected", permission="approve",
                     description="Reject steps waiting for approval")  # fmt: skip


@admin.register(FlowKey)
class FlowKeyAdmin(admin.ModelAdmin):
    """Flow control keys, made as steps and runs first use them. An operator sets a rate
    limit here: on `skill:<name>` it holds for every step of that skill, on another
    key it overrides the `rate:` of the steps using it. Agents read it within
    coordination.flow.OPERATOR_RATES_TTL seconds."""

    list_display = ["key", "rate_limit", "rate_per", "recent_starts"]
    search_fields = ["key"]
    fields = ["key", "rate_limit", "rate_per", "recent_starts", "starts"]
    # The key is what steps and runs hold and count by: a new one names a skill
    # (`skill:http.request`) or a rendered key, a saved one stays.
    readonly_fields = ["recent_starts", "starts"]

    def get_readonly_fields(self, request, obj=None):
        return ["key", *self.readonly_fields] if obj else self.readonly_fields

    @admin.display(description="starts in its window")
    def recent_starts(self, obj: FlowKey) -> int:
        """The starts its rate counts now (the row keeps those of its latest window)."""
        since = time.time() - (obj.rate_per or 0)
        return len([t for t in obj.starts if t > since]) if obj.rate_per else len(obj.starts)
