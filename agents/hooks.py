"""Where the layers above agents plug in: agents call these hooks and never import
the code behind them (pyproject.toml's layers contract), and the owner registers
its function in its AppConfig.ready, which has run in every Hive process before an
agent beats or a skill runs.

- `lease_renewers(agent=, task_ids=)`: on every heartbeat of an agent process,
  with the ids of the tasks its pool runs now; coordination pushes the leases of
  the steps they run forward (coordination/apps.py).
- `handoff_recorders(step=, sender=, to=, message_id=)`: inside the transaction
  of mailbox.handoff, which has just sent a step's context to agent `to` as
  message `message_id`; coordination records it on the run.
"""

from collections.abc import Callable


class Hook:
    """Functions called in the order they registered, each with the same keywords."""

    def __init__(self, name: str):
        self.name = name
        self._functions: list[Callable[..., object]] = []

    def register(self, function: Callable[..., object]) -> Callable[..., object]:
        """Add `function`; registering it again (a second ready()) changes nothing."""
        if function not in self._functions:
            self._functions.append(function)
        return function

    def __call__(self, **arguments) -> None:
        for function in self._functions:
            function(**arguments)

    def __repr__(self) -> str:
        return f"<Hook {self.name}: {len(self._functions)} registered>"


lease_renewers = Hook("lease_renewers")
handoff_recorders = Hook("handoff_recorders")
