from django.urls import path

from commands import views

app_name = "commands"

urlpatterns = [
    path("", views.console, name="console"),
    path("<str:name>/", views.command_form, name="form"),
]
