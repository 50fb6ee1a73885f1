from django.urls import path, re_path

from dashboard import views
from hive_core.api import ID_PATTERN

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("agents/", views.agents, name="agents"),
    path("runs/", views.runs, name="runs"),
    # An id too long for the database is no page (a 404), not a 500.
    re_path(rf"^runs/(?P<pk>{ID_PATTERN})/$", views.run_detail, name="run"),
    path("messages/", views.messages, name="messages"),
    path("notifications/", views.notifications, name="notifications"),
    path("token/", views.token, name="token"),
]
