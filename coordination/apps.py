from django.apps import AppConfig


class CoordinationConfig(AppConfig):
    name = "coordination"

    def ready(self) -> None:
        from agents import hooks
        from coordination.services import step_handoff_record, step_leases_renew

        # agents sits below coordination and cannot import it: an agent's heartbeat
        # renews its steps' leases, and mailbox.handoff records the handoff on the run,
        # through these hooks (agents/hooks.py).
        hooks.lease_renewers.register(step_leases_renew)
        hooks.handoff_recorders.register(step_handoff_record)

        # Registers the `hive.signal` message kind and the `signal.send` skill.
        import coordination.signalling  # noqa: F401
        from coordination.leadership import leader_passes
        from coordination.reaper import reap_pass

        leader_passes.register("reaper", reap_pass)
