"""POST /v1/embeddings: the OpenAI embeddings API as an adapter over the task's embedder.

The task's Embedder (functions/tasks/embeddings.py for text encoders, functions/tasks/image_features.py
for CLIP-style bundles, texts and images) validates ``input``, runs and pools; this module adds only
what the OpenAI shape adds: its fields, the ``model`` check, ``dimensions`` and ``encoding_format``.

``dimensions`` keeps the first N components and re-normalizes them (Matryoshka-style
shortening, as OpenAI's text-embedding-3 models do); ``encoding_format: base64`` answers the
little-endian float32 bytes, base64-encoded, as the OpenAI client expects.
"""

from __future__ import annotations

import base64
from typing import Callable

import numpy as np

from .errors import BadRequest, NotFound
from .inputs import shown, whole_number
from .tasks import Prepared, get_task
from .tasks.embeddings import l2_normalize

_FIELDS = ("input", "model", "encoding_format", "dimensions", "user")


class OpenAIEmbeddings:
    """The /v1/embeddings route of one loaded model whose task has an embedder."""

    def __init__(self, model, served_name: str):
        self.model = model
        self.name = served_name
        self.embedder = get_task(model.manifest.task).embedder
        # The vector width, when the graph declares it, so a `dimensions` past it is refused before inference.
        self.dimension: int | None = self.embedder.width(model)

    def create(self, data: dict) -> tuple[dict, int, int]:
        """(response body, batch size, token count) for a request body."""
        prepared, finish = self.begin(data)
        return finish(prepared, [self.model.run(f) for f in prepared.feeds])

    def begin(self, data: dict) -> tuple[Prepared, Callable[[Prepared, list[dict]], tuple[dict, int, int]]]:
        """The request validated and tokenized, and the function that answers it from its outputs."""
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise BadRequest(f"unknown field {shown(unknown[0])}", hint="fields: " + ", ".join(_FIELDS))
        requested, user = data.get("model"), data.get("user")
        if requested is not None and not isinstance(requested, str):
            raise BadRequest(f"model must be a string, got {shown(requested)}")
        if user is not None and not isinstance(user, str):
            raise BadRequest(f"user must be a string, got {shown(user)}")
        if requested is not None and requested != self.name:
            raise NotFound(f"no model named {shown(requested)} here", hint=f"this function serves {self.name!r}")
        fmt = data.get("encoding_format")
        fmt = "float" if fmt is None else fmt
        if not isinstance(fmt, str) or fmt not in ("float", "base64"):
            raise BadRequest(f"encoding_format must be \"float\" or \"base64\", got {shown(fmt)}")
        items = self.embedder.parse(self.model, data.get("input"))
        requested = data.get("dimensions")
        dimensions = whole_number(requested)
        # Checked before the model runs: a request bound for a 400 should not cost an inference.
        if requested is not None and (dimensions is None or dimensions < 1
                                      or (self.dimension and dimensions > self.dimension)):
            raise BadRequest(f"dimensions must be an integer from 1 to {self.dimension or 'the vector width'}, "
                             f"got {shown(requested)}")

        def finish(prepared: Prepared, outputs: list[dict]) -> tuple[dict, int, int]:
            vectors = self.embedder.vectors(self.model, prepared, outputs)
            if dimensions is not None:
                full = vectors.shape[1]
                if dimensions > full:
                    raise BadRequest(f"dimensions must be an integer from 1 to {full}, got {shown(dimensions)}")
                vectors = l2_normalize(vectors[:, :dimensions])
            data_out = [{"object": "embedding", "index": i, "embedding": self._encode(v, fmt)}
                        for i, v in enumerate(vectors)]
            usage = {"prompt_tokens": prepared.tokens, "total_tokens": prepared.tokens}
            body = {"object": "list", "data": data_out, "model": self.name, "usage": usage}
            return body, len(items), prepared.tokens

        return self.embedder.prepare(self.model, items), finish

    @staticmethod
    def _encode(vector: np.ndarray, fmt: str):
        if fmt == "base64":
            return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        return vector.tolist()
