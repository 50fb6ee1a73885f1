#!/usr/bin/env python
"""Django's command-line utility; `python manage.py hive --help` lists Hive's commands."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hive_project.settings")
    from hive_core.config import ConfigError

    try:
        from django.core.management import execute_from_command_line

        execute_from_command_line(sys.argv)
    except ConfigError as exc:
        # A bad variable is the user's to fix: one line naming it, no traceback.
        sys.exit(f"hive: configuration error: {exc}")


if __name__ == "__main__":
    main()
