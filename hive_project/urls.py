from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from commands.hooks import hook
from dashboard.api import EventListView
from hive_core.middleware import api_not_found
from hive_core.tokens import TokenRotateView
from ops import views as ops

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include("agents.api.urls")),
    path("api/v1/", include("coordination.api.urls")),
    path("api/v1/", include("commands.api.urls")),
    path("api/v1/", include("notifications.api.urls")),
    path("api/v1/events/", EventListView.as_view(), name="event-list"),
    path("api/v1/auth/token/rotate/", TokenRotateView.as_view(), name="token-rotate"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The docs page is for browsers: a login page rather than a 401. The split view
    # serves Swagger UI's start script as a file (?script), not inline, so the page
    # runs under the Content-Security-Policy's script-src 'self' with no nonce.
    path(
        "api/docs/",
        login_required(
            SpectacularSwaggerSplitView.as_view(
                url_name="api-schema", template_name="dashboard/api_docs.html"
            )
        ),
    ),
    re_path(r"^api/", api_not_found),
    # Webhook triggers: signed by their secret, outside the API's authentication.
    re_path(r"^hooks/(?P<name>[^/]+)/?$", hook, name="hook"),
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
    path("console/", include("commands.urls")),
    # The console's old address, for bookmarks: one page, at /console/.
    re_path(r"^commands/(?P<rest>.*)$", RedirectView.as_view(url="/console/%(rest)s")),
    path("", include("dashboard.urls")),
]
