"""The canonical task names, as constants for code that names a task. What each task is (its
synonyms, inputs, parameters, routes) is declared by its module in functions/tasks/, the registry
that :func:`resolve_task` asks."""

from __future__ import annotations

FEATURE_EXTRACTION = "feature-extraction"
TEXT_CLASSIFICATION = "text-classification"
TOKEN_CLASSIFICATION = "token-classification"
QUESTION_ANSWERING = "question-answering"
IMAGE_CLASSIFICATION = "image-classification"
ZERO_SHOT_IMAGE_CLASSIFICATION = "zero-shot-image-classification"  # CLIP: images against caller-given labels
AUTOMATIC_SPEECH_RECOGNITION = "automatic-speech-recognition"  # Whisper-style encoder-decoder models
IMAGE_FEATURE_EXTRACTION = "image-feature-extraction"  # CLIP: image (and text) embeddings in one space
TEXT_GENERATION = "text-generation"  # decoder-only LMs, served by onnxruntime-genai


def resolve_task(name: str) -> str:
    """The canonical name for a task name or synonym (see functions.tasks.resolve_task)."""
    from .tasks import resolve_task as resolve  # the registry imports this module's constants

    return resolve(name)
