"""Text-generation export: decoder-only models through onnxruntime-genai's model builder, behind a generation parity gate.

One module per job: ``source`` (HF directory / package / GGUF -> HF directory, runtime facts),
``prompts`` (the gate's prompts), ``candidates`` (builder recipes), ``parity`` (the gate),
``measure`` (prefill and decode speed), ``bundle`` (files and genai_config.json), ``exporter``.
"""

from .exporter import export_generation

__all__ = ["export_generation"]
