"""What export can build (targets, architectures, quantizations) and the parity gate's default thresholds.

Build-time vocabulary shared by the exporters and models.yaml validation (infra/spec.py).
"""

from __future__ import annotations

TARGETS = ("lambda", "gpu")
# Tasks export builds for the lambda target only, and why (models.yaml refuses target: gpu for them).
LAMBDA_ONLY_TASKS: dict[str, str] = {
    "automatic-speech-recognition": "its bundles have no fp16 export and no gate on a GPU provider yet",
}
ARCHITECTURES = ("x86_64", "arm64")
QUANTIZATIONS = ("int8", "int4", "fp16", "none")  # int4: text-generation only

# Parity thresholds per metric; a model may override any of them.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "mean_cosine": 0.99,
    "min_cosine": 0.97,
    "agreement": 0.99,
}
# text-generation's gate (export/generation/parity.py): minimums, except max_kl_mean, a maximum of
# the mean KL divergence (nats). Set between good and bad candidates measured on SmolLM2-135M-Instruct
# (32 prompts x 32 tokens): int4 block 32 (answers intact) top-1 0.69-0.74, KL 0.41-0.44, greedy 0.18-0.24;
# int4 block 128 ("Le Grand Jestam" for the capital of France) top-1 0.61, KL 0.71, greedy 0.12; fp32 1.0, 0.0, 0.97.
GENERATION_THRESHOLDS: dict[str, float] = {
    "top1_agreement": 0.65,
    "greedy_match": 0.15,
    "max_kl_mean": 0.55,
}

# automatic-speech-recognition's gate (export/speech.py): token_agreement, the share of built-in
# recordings whose greedy tokens equal PyTorch generate's (a minimum), and max_wer, the word error
# rate of the candidate's transcripts against PyTorch's (a maximum).
SPEECH_THRESHOLDS: dict[str, float] = {
    "token_agreement": 0.9,
    "max_wer": 0.05,
}

__all__ = ["ARCHITECTURES", "DEFAULT_THRESHOLDS", "GENERATION_THRESHOLDS", "QUANTIZATIONS", "SPEECH_THRESHOLDS",
           "TARGETS"]
