"""The skills every agent can offer; importing this package registers them."""

from agents.skills.builtin import basic, digest, http, llm, messaging, release, shell

__all__ = ["basic", "digest", "http", "llm", "messaging", "release", "shell"]
