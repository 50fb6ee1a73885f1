"""What the benchmarks do to the database between runs."""

from django.db import connection


def tables_tidy(*models) -> None:
    """Vacuum and analyze the models' tables (ANALYZE on SQLite). Servers run with
    autovacuum off too: there, a million dead rows without statistics made the planner
    scan the steps table for each update (15 ms each), and the dead steps of earlier
    runs cost the engine's foreach a tenth of its rate."""
    with connection.cursor() as cursor:
        for model in models:
            quoted = connection.ops.quote_name(model._meta.db_table)
            if connection.vendor == "postgresql":
                cursor.execute(f"VACUUM ANALYZE {quoted}")
            else:
                cursor.execute(f"ANALYZE {quoted}")
