"""`hash.sha256`: a digest anyone can recompute, so a run's result can be checked.

Round 1 hashes the UTF-8 text; every further round hashes the previous round's
32-byte digest (not its hex). The answer is the last digest in hex:

    d = sha256(text.encode()).digest()
    for _ in range(rounds - 1):
        d = sha256(d).digest()
"""

import hashlib

from agents.skills.registry import SkillContext, skill

# 100,000 rounds took 70 ms on these 2-core machines: real work per step
# without letting one input hold a worker for long.
MAX_ROUNDS = 100_000

PARAMS = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "maxLength": 1_000_000},
        "rounds": {"type": "integer", "minimum": 1, "maximum": MAX_ROUNDS},
    },
    "required": ["text"],
    "additionalProperties": False,
}


@skill("hash.sha256", params=PARAMS)
def sha256(ctx: SkillContext, *, text: str, rounds: int = 1) -> dict:
    """SHA-256 of a text, iterated `rounds` times; returns the hex digest."""
    digest = hashlib.sha256(text.encode()).digest()
    for _ in range(rounds - 1):
        digest = hashlib.sha256(digest).digest()
    return {"digest": digest.hex(), "rounds": rounds}
