"""`llm.chat`: one chat completion from an OpenAI-compatible endpoint."""

import httpx
from django.conf import settings

from agents.skills.registry import SkillContext, SkillError, skill

PARAMS = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "minLength": 1, "maxLength": 200000},
        "system": {"type": "string", "maxLength": 200000},
        "messages": {
            "type": "array",
            "minItems": 1,
            "maxItems": 500,
            "items": {
                "type": "object",
                "properties": {
                    "role": {"enum": ["system", "user", "assistant"]},
                    "content": {"type": "string", "maxLength": 200000},
                },
                "required": ["role", "content"],
                "additionalProperties": False,
            },
        },
        "model": {"type": "string", "minLength": 1, "maxLength": 200},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1000000},
    },
    "oneOf": [{"required": ["prompt"]}, {"required": ["messages"]}],
    "additionalProperties": False,
}


@skill("llm.chat", params=PARAMS)
def llm_chat(
    ctx: SkillContext,
    *,
    prompt: str | None = None,
    system: str | None = None,
    messages: list | None = None,
    model: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> dict:
    """Ask the configured model; return its reply, the model and token usage."""
    base_url = settings.HIVE_LLM_BASE_URL
    if not base_url:
        raise SkillError(
            "llm.chat is disabled: set HIVE_LLM_BASE_URL (and HIVE_LLM_API_KEY, "
            "HIVE_LLM_MODEL) to an OpenAI-compatible endpoint",
            retryable=False,
        )
    if messages is None:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
    payload = {"model": model or settings.HIVE_LLM_MODEL, "messages": messages}
    payload.update(
        {
            k: v
            for k, v in (("temperature", temperature), ("max_tokens", max_tokens))
            if v is not None
        }
    )
    headers = (
        {"Authorization": f"Bearer {settings.HIVE_LLM_API_KEY}"}
        if settings.HIVE_LLM_API_KEY
        else {}
    )
    url = base_url.rstrip("/") + "/chat/completions"
    try:
        response = httpx.post(url, json=payload, headers=headers, timeout=settings.HIVE_LLM_TIMEOUT)
    except httpx.HTTPError as exc:
        raise SkillError(f"llm.chat: cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise SkillError(
            f"llm.chat: {url} answered {response.status_code}: {response.text[:500]}",
            retryable=response.status_code >= 500 or response.status_code == 429,
        )
    try:
        data = response.json()
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise SkillError(f"llm.chat: {url} sent a reply that is not a chat completion") from None
    return {
        "content": content,
        "model": data.get("model", payload["model"]),
        "finish_reason": choice.get("finish_reason"),
        "usage": data.get("usage", {}),
    }
