from django.contrib import admin

from coordination.models import Run, StepRun, Workflow


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


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "workflow", "state", "created_by", "created_at", "finished_at"]
    list_filter = ["state", "workflow__name"]
    list_select_related = ["workflow", "created_by"]
    readonly_fields = [f.name for f in Run._meta.fields]
    inlines = [StepRunInline]


@admin.register(StepRun)
class StepRunAdmin(admin.ModelAdmin):
    list_display = ["key", "run", "state", "skill", "agent", "tries", "finished_at"]
    list_filter = ["state", "skill"]
    search_fields = ["key", "agent"]
    list_select_related = ["run__workflow"]
    readonly_fields = [f.name for f in StepRun._meta.fields]
