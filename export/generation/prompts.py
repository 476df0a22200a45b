"""Prompts the generation gate runs: built-in chat questions and raw texts, plus the user's ``--eval-file``.

The built-in set is generated here, never fetched: short factual questions (where a drifting
model changes the answer), instructions, arithmetic, code, non-English text and raw text
continuations. Chat prompts go through the model's own chat template (sandboxed Jinja, as the
runtime renders them) and are encoded without added special tokens, as transformers'
``apply_chat_template(tokenize=True)`` does; raw texts are encoded with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError

_QUESTIONS = (
    "What is the capital of France?", "What is the capital of Japan?", "Who wrote Romeo and Juliet?",
    "How many days are in a week?", "What color is the sky on a clear day?", "What is 12 plus 7?",
    "Name three fruits.", "What is the boiling point of water in Celsius?",
    "Explain in one sentence what a serverless function is.", "Give me a synonym for happy.",
    "Write a haiku about the ocean.", "Translate 'good morning' into Spanish.",
    "What is the largest planet in the solar system?", "Write a Python function that adds two numbers.",
    "List the first five prime numbers.", "Why do leaves change color in autumn?",
    "Wie heißt die Hauptstadt von Deutschland?", "Quelle est la couleur du ciel ?",
    "Summarize: The cat sat on the mat all afternoon, watching birds.", "hi",
)
_TEXTS = (
    "The quick brown fox", "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    ", "The three primary colors are", "Paris is the capital of",
    "1, 2, 3, 4, 5,", "In 1969, the first humans", "Machine learning is a field of",
    "東京は日本の", "The recipe calls for two cups of flour and",
    "the the the the the the the the", "Dear Sir or Madam,\n\nI am writing to",
)


@dataclass(frozen=True)
class Prompt:
    text: str
    chat: bool  # True: a user message rendered through the chat template


def builtin_prompts(has_template: bool) -> list[Prompt]:
    """Chat questions (as raw text too when the model has no chat template) and raw continuations."""
    return [Prompt(q, chat=has_template) for q in _QUESTIONS] + [Prompt(t, chat=False) for t in _TEXTS]


def load_eval_file(path: str | Path, has_template: bool) -> list[Prompt]:
    """JSONL, one object a line: {"prompt": "..."} (raw text) or {"messages": [...]} / {"chat": "..."} (chat)."""
    from ..samples import read_jsonl

    path = Path(path)
    prompts = []
    for number, row in read_jsonl(path):
        text = row.get("chat", row.get("prompt", row.get("text"))) if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ExportError(f"{path}:{number}: text-generation needs a non-empty string field 'prompt' or 'chat'")
        chat = "chat" in row
        if chat and not has_template:
            raise ExportError(f"{path}:{number}: 'chat' given but the model has no chat template; use 'prompt'")
        prompts.append(Prompt(text, chat=chat))
    if not prompts:
        raise ExportError(f"eval file {path} holds no prompts")
    return prompts


def render_chat(template: str, messages: list[dict], *, add_generation_prompt: bool = True,
                special: dict[str, str] | None = None) -> str:
    """The chat template rendered in a sandbox (no attribute tricks, no file access), as transformers does."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            **(special or {}))


def encode(tokenizer, prompt: Prompt, template: str, special: dict[str, str]) -> list[int]:
    """Token ids of ``prompt`` as the gate feeds them to both models."""
    if prompt.chat:
        text = render_chat(template, [{"role": "user", "content": prompt.text}], special=special)
        return tokenizer.encode(text, add_special_tokens=False).ids
    return tokenizer.encode(prompt.text).ids


__all__ = ["Prompt", "builtin_prompts", "encode", "load_eval_file", "render_chat"]
