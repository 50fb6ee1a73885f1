"""`make bench`: run every benchmark module in bench/, print one table and save
bench/results/latest.json. Uses DATABASE_URL/REDIS_URL when set, else the
embedded defaults under var/bench/ (apart from a `make run` in this checkout).
`python -m bench engine ping` runs only the benchmarks named."""

import importlib
import json
import os
import pkgutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hive_project.settings")
os.environ.setdefault("HIVE_VAR_DIR", str(ROOT / "var" / "bench"))
# The runs this driver starts are state changes, each an INFO line of `hive.events`;
# they would interleave with the progress lines and the table.
os.environ.setdefault("HIVE_LOG_LEVEL", "WARNING")
sys.path.insert(0, str(ROOT))


def main() -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    import bench
    from bench._table import render
    from hive_core.embedded_redis import embedded_redis_ensure, embedded_redis_stop
    from tests.processes import ProcessGroup

    started_redis = settings.REDIS_EMBEDDED and embedded_redis_ensure(
        directory=settings.VAR_DIR, socket_path=settings.REDIS_EMBEDDED_SOCKET
    )
    call_command("migrate", interactive=False, verbosity=0)
    names = [m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")]
    unknown = set(sys.argv[1:]) - set(names)
    if unknown:
        have = ", ".join(names)
        sys.exit(f"bench: no such benchmark: {', '.join(sorted(unknown))} (have {have})")
    names = sys.argv[1:] or names
    rows = []
    for name in sorted(names):
        print(f"bench: running {name} ...", flush=True)
        group = ProcessGroup(Path(tempfile.mkdtemp(prefix=f"hive-bench-{name}-")))
        try:
            rows += importlib.import_module(f"bench.{name}").run(group)
        finally:
            group.stop_all()
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    redis = "embedded Redis" if settings.REDIS_EMBEDDED else "Redis"
    print(f"\nHive benchmarks ({db}, {redis}, {os.cpu_count()} cores)\n")
    print(render(rows))
    out = ROOT / "bench" / "results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps([r.as_dict() for r in rows], indent=2) + "\n")
    print(f"\nsaved {out.relative_to(ROOT)}")
    if started_redis:
        embedded_redis_stop(socket_path=settings.REDIS_EMBEDDED_SOCKET)


if __name__ == "__main__":
    main()
