from django.db import migrations, models


def _grants_carry_over(apps, schema_editor):
    """Users and groups granted a permission on dashboard's Event keep it on events'."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    old = ContentType.objects.filter(app_label="dashboard", model="event").first()
    if old is None:
        return
    new, _ = ContentType.objects.get_or_create(app_label="events", model="event")
    for permission in Permission.objects.filter(content_type=old):
        moved, _ = Permission.objects.get_or_create(
            content_type=new, codename=permission.codename, defaults={"name": permission.name}
        )
        moved.user_set.add(*permission.user_set.all())
        moved.group_set.add(*permission.group_set.all())


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("dashboard", "0002_event_moved_to_events"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Event",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("kind", models.CharField(help_text="e.g. agent.offline", max_length=64)),
                        ("subject", models.CharField(db_index=True, help_text="e.g. agent:builder", max_length=200)),
                        ("data", models.JSONField(default=dict)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                    ],
                    options={"ordering": ["id"]},
                ),
            ],
        ),
        migrations.RunPython(_grants_carry_over, migrations.RunPython.noop),
    ]
