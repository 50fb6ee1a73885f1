from django.db import migrations


class Migration(migrations.Migration):
    """Event moved to the `events` app (a layer every app may import): the table is
    renamed, rows and sequence kept, and the model leaves this app's state."""

    dependencies = [("dashboard", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.AlterModelTable(name="event", table="events_event")],
            state_operations=[migrations.DeleteModel(name="Event")],
        )
    ]
