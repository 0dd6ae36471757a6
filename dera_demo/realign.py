"""Decoding-time realignment: the per-token mixing rule and coupled sampling.

Each next token is drawn from `softmax(ref_logits + strength * (aligned_logits - ref_logits))`.
`strength` is λ in Liu et al., "Decoding-time Realignment of Language Models" (ICML 2024,
arXiv 2402.02992), and it weights the aligned side: 0 is the reference (SFT) model, 1 the aligned
model, values between are more regularized (like retraining at β/λ > β) and values above 1
extrapolate to a less regularized model. Temperature, top-k and top-p apply after mixing.

Sampling is coupled across strengths: every row of a step shares one Gumbel noise vector drawn
from the seed, so two strengths pick different tokens only where their distributions really differ,
and a row's tokens do not depend on which other strengths share its batch.
"""

from __future__ import annotations

import math

import torch

MIN_STRENGTH = 0.0
MAX_STRENGTH = 10.0


def check_strength(strength: float) -> float:
    """Return `strength` as a float, or raise ValueError if it is not finite and in range."""
    if isinstance(strength, bool) or not isinstance(strength, int | float):
        raise TypeError(f"strength must be a number, got {strength!r}")
    if not math.isfinite(strength) or not MIN_STRENGTH <= strength <= MAX_STRENGTH:
        raise ValueError(
            f"strength must be a finite number from {MIN_STRENGTH:g} to {MAX_STRENGTH:g} "
            f"(0 = reference model, 1 = aligned model), got {strength!r}"
        )
    return float(strength)


def mix_logits(
    ref_logits: torch.Tensor, aligned_logits: torch.Tensor, strengths: torch.Tensor
) -> torch.Tensor:
    """Realigned logits, `ref_logits + strengths * (aligned_logits - ref_logits)`, in fp32.

    ref_logits, aligned_logits: (batch, vocab); strengths: (batch,). Returns (batch, vocab).
    A token that either model rules out (-inf) stays ruled out at every strength.
    """
    ref = ref_logits.float()
    aligned = aligned_logits.float()
    # torch.lerp switches to `end - (1 - w) * (end - start)` for w >= 0.5, so strength 0 returns
    # the reference logits and strength 1 the aligned logits bit for bit.
    mixed = torch.lerp(ref, aligned, strengths.to(ref).unsqueeze(-1))
    return mixed.masked_fill(~(ref.isfinite() & aligned.isfinite()), -math.inf)


def penalize_repeats(
    logits: torch.Tensor, seen: torch.Tensor, repetition_penalty: float
) -> torch.Tensor:
    """Divide positive logits (multiply negative ones) of already generated tokens by the penalty.

    NOTE: unlike transformers, the prompt's tokens are not penalized: the engine keeps only the
    generated tokens per row (README, Limitations).
    logits: (batch, vocab); seen: (batch, vocab) bool. The CTRL rule, as transformers applies it.
    """
    if repetition_penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty)
    return torch.where(seen, penalized, logits)


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the `top_k` largest logits of each row (0 keeps all). (batch, vocab)."""
    if top_k <= 0 or top_k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches `top_p`. (batch, vocab)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # Drop a token when the tokens ranked above it already reach top_p; the first always stays.
    drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def gumbel_noise(generator: torch.Generator, vocab_size: int) -> torch.Tensor:
    """One Gumbel(0, 1) sample per token, (vocab,), shared by every row of a step."""
    uniform = torch.rand(vocab_size, generator=generator, dtype=torch.float64)
    tiny = torch.finfo(torch.float64).tiny
    return -torch.log(-torch.log(uniform.clamp(tiny, 1.0 - 1e-12))).float()


def sample_tokens(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """Pick one token per row from realigned logits: greedy at temperature 0, else Gumbel-max.

    logits: (batch, vocab); noise: (vocab,) from `gumbel_noise`. Returns (batch,) token ids.
    Adding Gumbel noise and taking the argmax draws exactly from softmax(logits / temperature).
    """
    if temperature == 0.0 or noise is None:
        return logits.argmax(dim=-1)
    scaled = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    return (scaled + noise.to(scaled.device)).argmax(dim=-1)


def kl_to_ref(mixed_log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(mixed || ref) per row in nats; both (batch, vocab) log-probabilities, returns (batch,)."""
    probs = mixed_log_probs.exp()
    # 0 * log 0 is taken as 0; a token the reference rules out is ruled out after mixing too.
    terms = torch.where(probs > 0, probs * (mixed_log_probs - ref_log_probs), 0.0)
    return terms.sum(dim=-1)
