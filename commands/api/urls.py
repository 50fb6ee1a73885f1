from django.urls import path, re_path, register_converter

from commands.api import views
from hive_core.api import IdConverter

register_converter(IdConverter, "id")

urlpatterns = [
    path("commands/", views.CommandListView.as_view(), name="command-list"),
    # The spelling (no slash) and Django's (with one) both work.
    re_path(r"^commands/execute/?$", views.ExecuteView.as_view(), name="command-execute"),
    path("commands/invocations/", views.InvocationListView.as_view(), name="invocation-list"),
    path(
        "commands/invocations/<id:pk>/",
        views.InvocationDetailView.as_view(),
        name="invocation-detail",
    ),
    path("commands/schedules/", views.ScheduleListView.as_view(), name="schedule-list"),
    path("commands/schedules/<id:pk>/", views.ScheduleDetailView.as_view(), name="schedule-detail"),
    path("commands/triggers/", views.TriggerListView.as_view(), name="trigger-list"),
    path("commands/triggers/<id:pk>/", views.TriggerDetailView.as_view(), name="trigger-detail"),
    re_path(
        r"^commands/(?P<name>[^/]+)/$", views.CommandDetailView.as_view(), name="command-detail"
    ),
]
