from django.contrib import admin, messages

from coordination.models import Run, StepRun, Workflow
from coordination.services import (
    run_cancel,
    run_rerun,
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
    fields = ["key", "state", "skill", "agent", "tries", "error", "started_at", "finished_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


def _each(modeladmin, request, objects, service, done: str) -> None:
    """Apply an engine service to each selected object, reporting each outcome."""
    for obj in objects:
        try:
            service(obj)
        except HiveError as exc:
            modeladmin.message_user(request, f"{obj}: {exc}", messages.ERROR)
        else:
            modeladmin.message_user(request, f"{obj}: {done}", messages.SUCCESS)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "workflow", "state", "created_by", "created_at", "finished_at"]
    list_filter = ["state", "workflow__name"]
    search_fields = ["id", "workflow__name", "created_by__username"]
    list_select_related = ["workflow", "created_by"]
    readonly_fields = [f.name for f in Run._meta.fields]
    inlines = [StepRunInline]
    actions = ["cancel", "rerun"]

    @admin.action(description="Cancel: stop running steps, start no more", permissions=["change"])
    def cancel(self, request, queryset):
        _each(self, request, queryset, lambda run: run_cancel(run=run, user=request.user),
              "cancelled")  # fmt: skip

    @admin.action(description="Rerun with the same version and params", permissions=["add"])
    def rerun(self, request, queryset):
        _each(self, request, queryset, lambda run: run_rerun(run=run, user=request.user),
              "started again")  # fmt: skip


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

    @admin.action(description="Retry a failed step and everything after it",
                  permissions=["change"])  # fmt: skip
    def retry(self, request, queryset):
        _each(self, request, queryset, lambda step: step_retry(step=step, user=request.user),
              "retrying")  # fmt: skip

    @admin.action(description="Approve steps waiting for approval", permissions=["approve"])
    def approve(self, request, queryset):
        _each(self, request, queryset, lambda step: step_approve(step=step, user=request.user),
              "approved")  # fmt: skip

    @admin.action(description="Reject steps waiting for approval", permissions=["approve"])
    def reject(self, request, queryset):
        _each(self, request, queryset, lambda step: step_reject(step=step, user=request.user),
              "rejected")  # fmt: skip
