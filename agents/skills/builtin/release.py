"""`release.build` and `release.test`: package and test one component of a source tree.

A component is a folder directly under HIVE_RELEASE_SOURCE_DIR (the shipped
example app by default, examples/app/). Its name is checked twice: by the schema
(a plain name, no `/`, no `..`) and, after resolving symlinks, by requiring the
folder's parent to be the root itself, so nothing outside the tree is read.
"""

import contextlib
import gzip
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import time
import unittest
from pathlib import Path

from django.conf import settings

from agents.skills.registry import SkillContext, SkillError, SkillInputError, skill

COMPONENT = {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$", "maxLength": 64}
# Starts with a letter or digit and has no `/`: it cannot name a folder outside
# HIVE_RELEASE_ARTIFACT_DIR (`.` and `..` are refused by the first character).
VERSION = {"type": "string", "pattern": "^[0-9A-Za-z][0-9A-Za-z.+_-]*$", "maxLength": 64}
# Build and test debris is not part of a component.
SKIPPED_DIRS = frozenset({"__pycache__"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")
# Archives carry this mtime and no owner, so the same files give the same bytes
# (and the same sha256) on every agent, on every build.
FIXED_MTIME = 0
# Failing tests named in the error; the rest are counted.
MAX_NAMED_FAILURES = 10


def component_dir(component: str, *, skill_name: str) -> Path:
    """The folder of `component` under the source root, or SkillInputError."""
    root = Path(settings.HIVE_RELEASE_SOURCE_DIR).resolve()
    path = (root / component).resolve()
    if path.parent != root:
        raise SkillInputError(
            f"{skill_name}: inputs.component: {component!r} resolves outside "
            "HIVE_RELEASE_SOURCE_DIR; refusing it"
        )
    if not path.is_dir():
        raise SkillInputError(
            f"{skill_name}: inputs.component: no component {component!r} "
            f"(components: {', '.join(components_list(root)) or 'none'})"
        )
    return path


def components_list(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] not in "._")


# --- release.build -------------------------------------------------------------------


@skill(
    "release.build",
    params={
        "type": "object",
        "properties": {"component": COMPONENT, "version": VERSION},
        "required": ["component", "version"],
        "additionalProperties": False,
    },
)
def release_build(ctx: SkillContext, *, component: str, version: str) -> dict:
    """Package a component as <artifacts>/<version>/<component>.tar.gz; return its sha256."""
    source = component_dir(component, skill_name="release.build")
    files = _component_files(source)
    if not files:
        raise SkillError(f"release.build: {component}: no files to package", retryable=False)
    target_dir = Path(settings.HIVE_RELEASE_ARTIFACT_DIR).resolve() / version
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{component}.tar.gz"
    # Written beside the target and renamed over it: a reader never sees half an
    # archive, and two deliveries of the same build just write the same bytes twice.
    fd, temporary = tempfile.mkstemp(dir=target_dir, prefix=f".{component}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            _write_archive(raw, source=source, files=files, prefix=f"{component}-{version}")
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return {
        "component": component,
        "version": version,
        "path": str(target),
        "size": target.stat().st_size,
        "sha256": _file_sha256(target),
        "files": len(files),
    }


def _component_files(source: Path) -> list[Path]:
    """Every regular file of the component, relative and sorted; a symlink is refused
    (it could point anywhere, and an archive should not depend on where)."""
    files = []
    for folder, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in [*names, *dirs]:
            path = Path(folder, name)
            if path.is_symlink():
                relative = path.relative_to(source)
                raise SkillInputError(
                    f"release.build: {source.name}: {relative} is a symlink; refusing to package it"
                )
        files.extend(
            Path(folder, name).relative_to(source)
            for name in names
            if not name.endswith(SKIPPED_SUFFIXES)
        )
    return sorted(files, key=lambda p: p.as_posix())


def _write_archive(raw, *, source: Path, files: list[Path], prefix: str) -> None:
    # gzip stores a name and an mtime in its header: both fixed.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=FIXED_MTIME) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for relative in files:
            path = source / relative
            info = tarfile.TarInfo(f"{prefix}/{relative.as_posix()}")
            info.size = path.stat().st_size
            info.mtime = FIXED_MTIME
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as content:
                tar.addfile(info, content)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as content:
        for chunk in iter(lambda: content.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- release.test --------------------------------------------------------------------


@skill(
    "release.test",
    params={
        "type": "object",
        "properties": {"component": COMPONENT},
        "required": ["component"],
        "additionalProperties": False,
    },
)
def release_test(ctx: SkillContext, *, component: str) -> dict:
    """Run the component's unittest suite (test*.py); a failing test fails the step."""
    source = component_dir(component, skill_name="release.test")
    started = time.monotonic()
    result, output = _run_suite(source)
    seconds = round(time.monotonic() - started, 3)
    problems = [
        *((test, "failure", trace) for test, trace in result.failures),
        *((test, "error", trace) for test, trace in result.errors),
        *((test, "unexpected success", "") for test in result.unexpectedSuccesses),
    ]
    if problems:
        named = ", ".join(
            f"{test.id()} ({kind}{': ' + _last_line(trace) if trace else ''})"
            for test, kind, trace in problems[:MAX_NAMED_FAILURES]
        )
        more = len(problems) - MAX_NAMED_FAILURES
        raise SkillError(
            f"release.test: {component}: {len(problems)} of {result.testsRun} tests failed: "
            f"{named}{f' and {more} more' if more > 0 else ''}",
            retryable=False,  # the same code fails the same way
        )
    if result.testsRun == 0:
        raise SkillError(
            f"release.test: {component}: no tests found (unittest discovery of test*.py)",
            retryable=False,
        )
    skipped = len(result.skipped)
    return {
        "component": component,
        "ran": result.testsRun,
        "passed": result.testsRun - skipped - len(result.expectedFailures),
        "skipped": skipped,
        "expected_failures": len(result.expectedFailures),
        "seconds": seconds,
        "output": output[-2000:],
    }


def _run_suite(source: Path) -> tuple[unittest.TestResult, str]:
    """Discover and run the suite in this process, its output captured.

    Discovery puts the component on sys.path and imports its modules under their
    plain names, so both are undone afterwards: the next component (or the next
    build of this one) in the same worker process must import its own files, not
    these. Bytecode is not written: the source tree may be read-only, and stale
    .pyc files are not part of a component. Agents run one step per pool process
    (prefork), which is what makes swapping these process-wide things safe.
    """
    modules_before = set(sys.modules)
    path_before = list(sys.path)
    bytecode_before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    stream = io.StringIO()
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            suite = unittest.TestLoader().discover(str(source), top_level_dir=str(source))
            result = unittest.TextTestRunner(stream=stream, verbosity=2).run(suite)
    finally:
        sys.path[:] = path_before
        sys.dont_write_bytecode = bytecode_before
        for name in set(sys.modules) - modules_before:
            module_file = getattr(sys.modules[name], "__file__", None)
            if module_file and Path(module_file).resolve().is_relative_to(source):
                del sys.modules[name]
    return result, stream.getvalue()


def _last_line(trace: str) -> str:
    """`AssertionError: 3 != 4`: the end of a traceback says what went wrong."""
    lines = [line for line in trace.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else ""
