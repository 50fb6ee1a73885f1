from hive_core import __version__

# Import the Celery app when Django starts so @shared_task binds to it.
from hive_project.celery import app as celery_app

__all__ = ("__version__", "celery_app")
