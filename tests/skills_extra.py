"""A skill module outside Hive, loaded through HIVE_SKILL_MODULES as a user's would be."""

from agents.skills import skill


@skill(
    "test.upper",
    params={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
)
def upper(ctx, *, text: str) -> dict:
    """Upper-case a text."""
    return {"text": text.upper()}
