"""The generation parity gate: does a candidate decoder answer like the PyTorch fp32 model?

The reference is transformers' fp32 model: for each prompt its greedy continuation (``generate``,
``do_sample=False``, stopping at the bundle's end-of-turn ids) and its next-token distribution at
every continuation position (teacher forcing over prompt + continuation). A candidate is scored
on the same token ids:

- ``top1_agreement``: share of continuation positions where the candidate's most likely next
  token is the reference's (one ONNX forward pass over prompt + reference continuation);
- ``kl_mean``: mean KL(reference || candidate) of those next-token distributions, in nats;
- ``greedy_match``: mean share of the reference's greedy tokens the candidate reproduces before
  its first divergence, decoding with onnxruntime-genai's own generator (the runtime's path);
- ``greedy_exact`` (recorded only): share of prompts whose whole greedy answer is identical.

Thresholds are minimums except ``max_kl_mean``, an upper bound on ``kl_mean``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GATED = ("top1_agreement", "greedy_match", "max_kl_mean")


@dataclass(frozen=True)
class Reference:
    prompt_ids: list[list[int]]
    continuations: list[list[int]]  # greedy tokens per prompt (eos included when reached)
    log_probs: list[np.ndarray]  # (len(continuation), vocab) log-softmax per prompt


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def torch_reference(hf_dir: Path, prompt_ids: list[list[int]], *, eos_ids: tuple[int, ...], pad_id: int,
                    max_new_tokens: int, threads: int | None = None) -> Reference:
    """transformers fp32: greedy continuations and their teacher-forced next-token log-probabilities."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    from ..convert import quiet

    if threads:
        torch.set_num_threads(threads)
    with quiet():
        model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    continuations, log_probs = [], []
    with torch.inference_mode(), quiet():
        for ids in prompt_ids:
            feed = torch.tensor([ids], dtype=torch.long)
            out = model.generate(feed, attention_mask=torch.ones_like(feed), do_sample=False, num_beams=1,
                                 max_new_tokens=max_new_tokens, eos_token_id=list(eos_ids), pad_token_id=pad_id,
                                 top_k=None, top_p=None, temperature=None)
            cont = out[0, len(ids):].tolist()
            continuations.append(cont)
            full = torch.tensor([ids + cont], dtype=torch.long)
            logits = model(full).logits[0, len(ids) - 1: len(ids) - 1 + len(cont)].float().numpy()
            log_probs.append(_log_softmax(logits))
    return Reference(prompt_ids=prompt_ids, continuations=continuations, log_probs=log_probs)


def teacher_forced_logits(model_path: Path, reference: Reference, threads: int) -> list[np.ndarray]:
    """The candidate graph's logits at each reference continuation position (one pass, empty KV cache)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    past = [i for i in session.get_inputs() if i.name.startswith("past_key_values")]
    dtype = np.float16 if past and "float16" in past[0].type else np.float32
    out = []
    for ids, cont in zip(reference.prompt_ids, reference.continuations):
        full = np.asarray([ids + cont], dtype=np.int64)
        feeds = {"input_ids": full, "attention_mask": np.ones_like(full)}
        for i in past:
            heads, head_size = i.shape[1], i.shape[3]
            feeds[i.name] = np.zeros((1, heads, 0, head_size), dtype=dtype)
        logits = session.run(["logits"], feeds)[0][0]
        out.append(logits[len(ids) - 1: len(ids) - 1 + len(cont)].astype(np.float32))
    return out


def genai_greedy(model_dir: Path, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations from onnxruntime-genai's generator, the runtime's decoding path."""
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    out = []
    for ids in prompt_ids:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(ids) + max_new_tokens, batch_size=1)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray([ids], dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
        out.append(list(generator.get_sequence(0))[len(ids):])
        del generator
    return out


def _leading_match(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def compare(reference: Reference, logits: list[np.ndarray], greedy: list[list[int]]) -> dict[str, float]:
    """Gate metrics of one candidate (see the module docstring)."""
    agree = total = 0
    kls = []
    for ref_lp, cont, cand in zip(reference.log_probs, reference.continuations, logits):
        if not cont:
            continue
        agree += int((cand.argmax(-1) == np.asarray(cont)).sum())
        total += len(cont)
        cand_lp = _log_softmax(cand)
        kls.extend((np.exp(ref_lp) * (ref_lp - cand_lp)).sum(-1).tolist())
    match = [(_leading_match(r, g) / len(r)) if r else float(g == r)
             for r, g in zip(reference.continuations, greedy)]
    return {
        "top1_agreement": agree / total if total else 1.0,
        "kl_mean": float(np.mean(kls)) if kls else 0.0,
        "greedy_match": float(np.mean(match)),
        "greedy_exact": float(np.mean([r == g for r, g in zip(reference.continuations, greedy)])),
    }


def passes(metrics: dict[str, float], thresholds: dict[str, float]) -> bool:
    """True when every gated metric is within its threshold (missing metrics fail)."""
    if not metrics:
        return False
    for name, bound in thresholds.items():
        if name == "max_kl_mean":
            if metrics.get("kl_mean", float("inf")) > bound:
                return False
        elif metrics.get(name, float("-inf")) < bound:
            return False
    return True


__all__ = ["GATED", "Reference", "compare", "genai_greedy", "passes", "teacher_forced_logits", "torch_reference"]
