"""ASGI entry point: the dashboard, API and admin over HTTP."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hive_project.settings")

application = get_asgi_application()
