"""Loading: definition files (and the built-ins' registry) into the Command table.

`loader` reads and validates one file into a `Definition`; this module saves
definitions as versions, loads whole folders and disables what they no longer hold.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from commands.loader import (
    SHIPPED_DIR,
    Definition,
    command_roots,
    definition_files,
    definition_read,
    name_of,
)
from commands.models import Command
from commands.registry import BUILTINS
from coordination.services import workflow_load, workflow_save
from events.kinds import subject
from events.services import event_emit
from hive_core.yamlfile import DefinitionError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """What loading did to one command, as `hive load` reports it."""

    name: str
    action: str  # created, updated, unchanged, enabled, disabled, error
    version: int | None = None
    source: str = ""
    error: str = ""
    why: str = ""  # of a command disabled because of where its file is

    def __str__(self) -> str:
        where = f", {self.source}" if self.source else ""
        if self.action == "error":
            return f"error: {self.error} (the loaded version, if any, stays active)"
        if self.action == "updated":
            return f"/{self.name} updated to v{self.version}{where}"
        if self.action == "disabled" and self.why:
            return f"/{self.name} disabled: {self.why}{where}"
        return f"/{self.name} {self.action} (v{self.version}{where})"


@transaction.atomic
def command_save(*, definition: Definition) -> tuple[Command, str]:
    """Save a validated definition: a new command, a new version of a changed one, or
    nothing. Its workflow is saved as a new version only when it changed."""
    existing = Command.objects.select_for_update().filter(name=definition.name).first()
    if existing and existing.digest == definition.digest:
        action = "unchanged"
        if existing.enabled != definition.enabled:
            action = "enabled" if definition.enabled else "disabled"
        if action != "unchanged" or existing.source != definition.source:
            existing.enabled, existing.source = definition.enabled, definition.source
            existing.save(update_fields=["enabled", "source", "updated_at"])
        return existing, action
    workflow, _ = workflow_save(
        name=definition.workflow_spec["name"],
        spec=definition.workflow_spec,
        source=f"/{definition.name}",
    )
    fields = {
        "description": definition.description,
        "argument_hint": definition.argument_hint,
        "params": definition.params,
        "definition": definition.definition,
        "workflow": workflow,
        "builtin": "",
        "permission": definition.permission,
        "approval": definition.approval,
        "overlap": definition.overlap,
        "overlap_key": definition.overlap_key,
        "priority": definition.priority,
        "timeout": definition.timeout,
        "enabled": definition.enabled,
        "body": definition.body,
        "source": definition.source,
        "digest": definition.digest,
    }
    if existing is None:
        command = Command.objects.create(name=definition.name, version=1, **fields)
        action = "created"
    else:
        for name, value in fields.items():
            setattr(existing, name, value)
        existing.version += 1
        existing.save()
        command, action = existing, "updated"
    event_emit(
        kind=f"command.{action}",
        subject=subject("command", command.name),
        data={"version": command.version, "source": command.source},
    )
    return command, action


def shipped_workflows_load() -> list[Change]:
    """Save the shipped workflows (definitions/_workflows/) that the demo commands run
    as sub-workflows: they must be stored before a command naming one is checked."""
    changes = []
    for path in sorted((SHIPPED_DIR / "_workflows").glob("*.yaml")):
        try:
            workflow, _ = workflow_load(path=path)
        except DefinitionError as exc:
            changes.append(Change(name="", action="error", error=str(exc)))
        else:
            # Not a command: reported by `hive load -v` only as what it is.
            logger.debug("workflow %s from %s", workflow, path)
    return changes


def commands_load(*, paths: list[Path] | None = None) -> list[Change]:
    """Sync definition files into the database and say what changed.

    With no paths: the shipped definitions and HIVE_COMMAND_DIRS. A folder is
    loaded whole, and its commands whose file is gone are disabled; a broken file
    is reported and its command keeps the version it had.
    """
    changes = builtins_sync()
    if not paths:
        changes += shipped_workflows_load()
    roots = [Path(p) for p in paths] if paths else [r for r in command_roots() if r.is_dir()]
    present: set[str] = set()  # every definition file found, loaded or broken
    names: dict[str, Path] = {}  # each name to the file that defined it
    for root in roots:
        if root.is_dir():
            files = definition_files(root)
        elif root.is_file():
            files = [(root, name_of(root))]
        else:
            changes.append(Change(name="", action="error", error=f"{root}: no such file or folder"))
            continue
        for path, name in files:
            present.add(str(path.resolve()))
            try:
                definition = definition_read(path, name=name)
                other = names.setdefault(definition.name, path)
                if other != path:
                    raise DefinitionError(f"{path}: /{definition.name} is defined by {other} too")
                command, action = command_save(definition=definition)
            except DefinitionError as exc:
                changes.append(Change(name=name, action="error", error=str(exc)))
                continue
            changes.append(
                Change(name=command.name, action=action, version=command.version, source=str(path))
            )
        if root.is_dir():
            changes += _disable_removed(root, present=present)
    if not paths:
        # A folder dropped from HIVE_COMMAND_DIRS takes its commands with it.
        changes += _disable_removed(None, present=present)
    return changes


def _disable_removed(root: Path | None, *, present: set[str]) -> list[Change]:
    """Disable the commands loaded from a file under `root` (or anywhere: None) that
    is not among those just read."""
    gone = Command.objects.filter(enabled=True, builtin="").exclude(source="")
    if root is not None:
        gone = gone.filter(source__startswith=str(root.resolve()).rstrip("/") + "/")
    reason = "file removed" if root is not None else "folder not loaded"
    why = "its file is gone" if root is not None else "its folder is not in HIVE_COMMAND_DIRS"
    changes = []
    for command in gone.exclude(source__in=present):
        command.enabled = False
        command.save(update_fields=["enabled", "updated_at"])
        event_emit(
            kind="command.disabled",
            subject=subject("command", command.name),
            data={"reason": reason, "source": command.source},
        )
        changes.append(Change(name=command.name, action="disabled", source=command.source, why=why))
    return changes


def builtins_sync() -> list[Change]:
    """Make every /hive:* command a row, so it is listed, permission-checked and
    audited like the others; an admin may disable one."""
    changes = []
    # One query when nothing changed, as on every start and every listing.
    digests = dict(Command.objects.filter(name__in=BUILTINS).values_list("name", "digest"))
    for spec in BUILTINS.values():
        fields = {
            "description": spec.description,
            "argument_hint": spec.argument_hint,
            "params": spec.params,
            "permission": spec.permission,
            "body": spec.body,
            "builtin": spec.name,
            "source": "builtin",
        }
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        if digests.get(spec.name) == digest:
            continue
        with transaction.atomic():
            existing = Command.objects.select_for_update().filter(name=spec.name).first()
            if existing and existing.digest == digest:
                continue
            if existing is None:
                Command.objects.create(name=spec.name, digest=digest, **fields)
                changes.append(
                    Change(name=spec.name, action="created", version=1, source="built-in")
                )
            else:
                Command.objects.filter(pk=existing.pk).update(
                    digest=digest, version=existing.version + 1, **fields
                )
                changes.append(
                    Change(
                        name=spec.name,
                        action="updated",
                        version=existing.version + 1,
                        source="built-in",
                    )
                )
    return changes
