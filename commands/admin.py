import json

from django import forms
from django.contrib import admin, messages
from django_celery_beat.admin import PeriodicTaskAdmin, PeriodicTaskForm
from django_celery_beat.models import PeriodicTask

from commands.loader import definition_build
from commands.models import Command, Invocation, Trigger
from commands.selectors import SCHEDULE_TASK, schedule_kwargs, schedule_record
from commands.services import command_save, commands_load, schedule_saved, schedule_text_check
from commands.triggers import trigger_template_check, trigger_visible_list
from hive_core.errors import HiveError
from hive_core.yamlfile import DefinitionError


class CommandForm(forms.ModelForm):
    """Edit a command as its definition file would say it; saving re-validates the
    whole (schema, steps, skills, templates) and makes a new version."""

    workflow_definition = forms.JSONField(
        required=False,
        help_text='Inline steps ({"steps": [...]}) or "name@version" of a stored workflow.',
    )

    class Meta:
        model = Command
        fields = [
            "description",
            "argument_hint",
            "params",
            "permission",
            "approval",
            "overlap",
            "overlap_key",
            "priority",
            "timeout",
            "enabled",
            "body",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["workflow_definition"].initial = self.instance.definition.get("workflow")

    def clean(self):
        data = super().clean()
        if self.instance.builtin:
            raise forms.ValidationError(
                "a built-in's definition is its code; only enable or disable it"
            )
        front = {
            "description": data.get("description", ""),
            "argument-hint": data.get("argument_hint", ""),
            "params": data.get("params") or {},
            "workflow": data.get("workflow_definition"),
            "permission": data.get("permission"),
            "approval": data.get("approval", ""),
            "overlap": {
                "policy": data.get("overlap"),
                **({"key": data["overlap_key"]} if data.get("overlap_key") else {}),
            },
            "priority": data.get("priority"),
            "timeout": data.get("timeout"),
            "enabled": data.get("enabled", True),
        }
        front = json.loads(json.dumps({k: v for k, v in front.items() if v not in ("", None)}))
        try:
            self.definition = definition_build(
                front,
                body=data.get("body", ""),
                name=self.instance.name,
                source=f"admin /{self.instance.name}",
                path=self.instance.source,
            )
        except DefinitionError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(Command)
class CommandAdmin(admin.ModelAdmin):
    form = CommandForm
    list_display = ["name", "description", "version", "enabled", "overlap", "permission", "source"]
    list_filter = ["enabled", "overlap"]
    search_fields = ["name", "description"]
    readonly_fields = [
        "name",
        "version",
        "workflow",
        "builtin",
        "source",
        "digest",
        "created_at",
        "updated_at",
    ]
    actions = ["enable", "disable", "reload"]

    def has_add_permission(self, request) -> bool:
        return False  # commands come from definition files (hive load); edit them here

    def save_model(self, request, obj, form, change):
        if obj.builtin:
            Command.objects.filter(pk=obj.pk).update(enabled=obj.enabled)
            return
        saved, action = command_save(definition=form.definition)
        obj.pk, obj.version = saved.pk, saved.version
        self.message_user(request, f"/{saved.name} {action} (v{saved.version})", messages.SUCCESS)

    @admin.action(description="Enable the selected commands", permissions=["change"])
    def enable(self, request, queryset):
        queryset.update(enabled=True)

    @admin.action(description="Disable the selected commands", permissions=["change"])
    def disable(self, request, queryset):
        queryset.update(enabled=False)

    @admin.action(
        description="Reload every command from its definition files (as `hive load`)",
        permissions=["change"],
    )
    def reload(self, request, queryset):
        # Django runs an action on a selection; this one syncs every file, as `hive load`.
        for change in commands_load():
            level = messages.ERROR if change.action == "error" else messages.INFO
            self.message_user(request, str(change), level)


@admin.register(Invocation)
class InvocationAdmin(admin.ModelAdmin):
    """The audit trail: read only."""

    list_display = ["id", "command_name", "user", "source", "outcome", "run", "created_at"]
    list_filter = ["outcome", "source"]
    search_fields = ["text", "command_name", "user__username"]
    list_select_related = ["user", "run"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Invocation._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ScheduleForm(PeriodicTaskForm):
    """django-celery-beat's form; a command schedule's text is checked as the user
    saving it (`user`, set by the admin), who is the user it will run as."""

    user = None

    def clean(self):
        data = super().clean()
        if data.get("task") == SCHEDULE_TASK and "kwargs" in data:
            text = schedule_kwargs(PeriodicTask(kwargs=data["kwargs"])).get("text")
            if not isinstance(text, str) or not text.strip():
                self.add_error("kwargs", 'give the command to run: {"text": "/command args"}')
            else:
                try:
                    schedule_text_check(text=text, user=self.user)
                except HiveError as exc:
                    self.add_error("kwargs", str(exc))
        return data


# Replaces django-celery-beat's registration: a periodic task that runs a command
# runs as the user who saved it here, recorded by Hive (Schedule), never as a user
# its kwargs name (a staff user with only the periodic-task permissions made one
# whose kwargs said user_id 1 and ran commands as the admin).
admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class ScheduleAdmin(PeriodicTaskAdmin):
    form = ScheduleForm
    # django-celery-beat's form page with its inline script moved to a file: the
    # Content-Security-Policy (script-src 'self') refuses inline scripts.
    change_form_template = "commands/admin/schedule_change_form.html"

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        schedule_saved(task=obj, user=request.user)  # checked in the form's clean

    @admin.action(description="Run selected tasks", permissions=["change"])
    def run_tasks(self, request, queryset):
        # Running a command schedule now runs its command as its owner: only its owner
        # may, as only they may run that command when they like.
        others = [
            task.name
            for task in queryset.filter(task=SCHEDULE_TASK)
            if getattr(schedule_record(task), "owner_id", None) != request.user.pk
        ]
        if others:
            self.message_user(
                request,
                f"not run: {', '.join(others)}: a command schedule runs now only for its owner",
                messages.ERROR,
            )
            queryset = queryset.exclude(name__in=others)
        if queryset.exists():
            super().run_tasks(request, queryset)


class TriggerForm(forms.ModelForm):
    """Checked as the API checks it (trigger_save): the template compiles, and only a
    superuser names another user than themselves to run as."""

    by = None

    class Meta:
        model = Trigger
        fields = ["name", "command", "user", "secret", "enabled"]

    def clean(self):
        data = super().clean()
        trigger = Trigger(**{f: data[f] for f in self.Meta.fields if f in data})
        try:
            trigger_template_check(command=trigger.command or "")
            if data.get("user") and data["user"] != self.by and not self.by.is_superuser:
                raise HiveError("user: only a superuser may make a trigger run as someone else")
        except HiveError as exc:
            field, _, message = exc.message.partition(": ")
            self.add_error(field if field in self.Meta.fields else None, message or exc.message)
        return data


@admin.register(Trigger)
class TriggerAdmin(admin.ModelAdmin):
    form = TriggerForm
    list_display = ["name", "command", "user", "enabled", "rejected_count", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["name", "command"]
    readonly_fields = ["rejected_count", "created_at"]

    def get_queryset(self, request):
        return trigger_visible_list(user=request.user)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"by": request.user})

    def get_changeform_initial_data(self, request):
        return {"user": request.user.pk, **super().get_changeform_initial_data(request)}
