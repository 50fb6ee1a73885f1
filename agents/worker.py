"""Which agent this worker process is.

`hive agent` sets `identity` before it starts the Celery worker, so the worker's
bootstep (agents/bootstep.py) and the pool processes forked from it know it; it
stays None in every other process (web, coordinator, CLI). Imported before Django
is set up (hive_project/celery.py loads the bootstep), and by the lowest modules
of agents (mailbox's default sender), so it imports nothing but agents.identity.
"""

from agents.identity import AgentSpec

identity: AgentSpec | None = None
