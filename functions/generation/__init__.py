"""Text generation: decoder-only language models served with onnxruntime-genai.

    GenerationModel   the loaded bundle (genai model, tokenizer, chat template, limits)
    Generation        one request's answer, decoded lazily as text pieces
    SamplingOptions   max_tokens, temperature (0 = greedy), top_p, top_k, seed, stop, repetition_penalty
    OpenAIGeneration  POST /v1/chat/completions and /v1/completions over a GenerationModel

The Hugging Face shape (POST /models/{name}/predict) is the task module functions/tasks/generation.py.
Importing this package does not load onnxruntime-genai or jinja2; loading a model does.
"""

from .model import LENGTH, STOP, Generation, GenerationModel
from .openai import OpenAIGeneration, Reply
from .options import SamplingOptions

__all__ = ["LENGTH", "STOP", "Generation", "GenerationModel", "OpenAIGeneration", "Reply", "SamplingOptions"]
