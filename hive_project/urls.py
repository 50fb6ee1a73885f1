from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include("agents.api.urls")),
    path("api/v1/", include("commands.api.urls")),
    path("commands/", include("commands.urls")),
    path("", include("dashboard.urls")),
]
