"""The tasks modelfn serves, with their synonyms. One place decides what a task name means."""

from __future__ import annotations

from .errors import UnknownTaskError

FEATURE_EXTRACTION = "feature-extraction"
TEXT_CLASSIFICATION = "text-classification"
TOKEN_CLASSIFICATION = "token-classification"
QUESTION_ANSWERING = "question-answering"
TEXT_GENERATION = "text-generation"  # decoder-only LMs, served by onnxruntime-genai

SUPPORTED_TASKS: tuple[str, ...] = (
    FEATURE_EXTRACTION,
    TEXT_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    QUESTION_ANSWERING,
    TEXT_GENERATION,
)

# Names users reach for that mean one of the tasks above (Hugging Face pipeline aliases and
# common shorthands).
TASK_SYNONYMS: dict[str, str] = {
    "embeddings": FEATURE_EXTRACTION,
    "embedding": FEATURE_EXTRACTION,
    "sentence-embeddings": FEATURE_EXTRACTION,
    "sentence-similarity": FEATURE_EXTRACTION,
    "default": FEATURE_EXTRACTION,
    "sentiment-analysis": TEXT_CLASSIFICATION,
    "sequence-classification": TEXT_CLASSIFICATION,
    "ner": TOKEN_CLASSIFICATION,
    "qa": QUESTION_ANSWERING,
    "causal-lm": TEXT_GENERATION,
    "text-generation-with-past": TEXT_GENERATION,
    "chat": TEXT_GENERATION,
    "generation": TEXT_GENERATION,
}


def resolve_task(name: str) -> str:
    """Return the canonical task name for ``name`` or raise UnknownTaskError listing the valid ones."""
    key = str(name).strip().lower().replace("_", "-")
    if key in SUPPORTED_TASKS:
        return key
    if key in TASK_SYNONYMS:
        return TASK_SYNONYMS[key]
    raise UnknownTaskError(
        f"unknown task {name!r}",
        hint="supported tasks: " + ", ".join(SUPPORTED_TASKS),
    )
