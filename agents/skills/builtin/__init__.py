"""The skills every agent can offer; importing this package registers them."""

from agents.skills.builtin import basic, http, llm, messaging, shell

__all__ = ["basic", "http", "llm", "messaging", "shell"]
