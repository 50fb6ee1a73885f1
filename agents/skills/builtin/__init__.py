"""The skills every agent can offer; importing this package registers them."""

from agents.skills.builtin import basic, http, llm, shell

__all__ = ["basic", "http", "llm", "shell"]
