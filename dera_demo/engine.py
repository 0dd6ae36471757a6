"""Realigned generation: several strengths of one prompt decoded as one batch, streamed per token.

The prompt is prefilled once per model, its caches copied to one row per strength, and each step
runs both models once on the whole batch. Sequences that finish leave the batch.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from dera_demo.models import ModelPair
from dera_demo.realign import (
    check_strength,
    gumbel_noise,
    kl_to_ref,
    mix_logits,
    penalize_repeats,
    sample_tokens,
)
from dera_demo.streaming import TextStream

logger = logging.getLogger(__name__)

StopReason = Literal["eos", "stop_string", "max_new_tokens", "context"]
MAX_NEW_TOKENS = 4096
MAX_STRENGTHS = 16


@dataclass(frozen=True)
class SamplingConfig:
    """How tokens are drawn from the realigned distribution. Temperature 0 is greedy.

    The defaults are the authors' demo settings (temperature 0.7, top-k 50, top-p 0.95, seed 42).
    `top_k` 0 and `top_p` 1 switch those filters off; `repetition_penalty` 1 leaves logits alone.
    """

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 0.95
    seed: int = 42
    repetition_penalty: float = 1.0
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        _check_int("top_k", self.top_k, 0, None)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        _check_real("temperature", self.temperature, "from 0 (greedy) up", lambda t: t >= 0)
        _check_real("top_p", self.top_p, "in (0, 1]", lambda p: 0 < p <= 1)
        _check_real(
            "repetition_penalty", self.repetition_penalty, "from 1 to 2", lambda r: 1 <= r <= 2
        )
        if not all(isinstance(s, str) and s for s in self.stop_strings):
            raise ValueError(f"stop_strings must be non-empty strings, got {self.stop_strings!r}")


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {allowed}, got {value}")


def _check_real(name: str, value: object, allowed: str, ok: Callable[[float], bool]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


class LiveStrengths:
    """The strengths of a running generation, one per sequence, changeable from any thread.

    The engine reads them before every token, so `set` takes effect at the next token.
    """

    def __init__(self, strengths: Sequence[float]) -> None:
        if isinstance(strengths, str) or not 1 <= len(strengths) <= MAX_STRENGTHS:
            raise ValueError(f"give from 1 to {MAX_STRENGTHS} strengths, got {strengths!r}")
        self._values = [check_strength(s) for s in strengths]
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def set(self, index: int, strength: float) -> None:
        if not 0 <= index < len(self._values):
            raise IndexError(
                f"sequence index must be from 0 to {len(self._values) - 1}, got {index}"
            )
        value = check_strength(strength)
        with self._lock:
            self._values[index] = value

    def snapshot(self) -> list[float]:
        with self._lock:
            return list(self._values)


@dataclass(frozen=True)
class TokenUpdate:
    """One new token of one sequence. Log-probabilities are in nats at temperature 1."""

    index: int  # which sequence: the position of its strength in the call
    strength: float  # the strength this token was drawn at
    token_id: int
    text: str  # text this token releases for display (may be empty)
    ref_log_prob: float  # the token under the reference model
    aligned_log_prob: float  # the token under the aligned model
    log_prob: float  # the token under the realigned distribution
    kl_to_ref: float  # KL(realigned || reference) at this position
    stop_reason: StopReason | None  # set on the sequence's last token


@dataclass
class Completion:
    """A finished sequence, as collected by `generate`."""

    strength: float  # the strength of its last token
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    stop_reason: StopReason | None = None
    ref_log_probs: list[float] = field(default_factory=list)
    aligned_log_probs: list[float] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    kls: list[float] = field(default_factory=list)

    def add(self, update: TokenUpdate) -> None:
        self.strength = update.strength
        self.text += update.text
        self.token_ids.append(update.token_id)
        self.stop_reason = update.stop_reason
        self.ref_log_probs.append(update.ref_log_prob)
        self.aligned_log_probs.append(update.aligned_log_prob)
        self.log_probs.append(update.log_prob)
        self.kls.append(update.kl_to_ref)


def _prompt_tensor(pair: ModelPair, prompt_ids: Sequence[int]) -> torch.Tensor:
    if len(prompt_ids) == 0:
        raise ValueError("prompt must have at least one token, got an empty prompt")
    if len(prompt_ids) >= pair.context_length:
        raise ValueError(
            f"prompt is {len(prompt_ids)} tokens; the model's context holds {pair.context_length}, "
            "so the prompt must be shorter than that"
        )
    return torch.tensor([list(prompt_ids)], dtype=torch.long)


def _token_stats(
    ref_logits: torch.Tensor,
    aligned_logits: torch.Tensor,
    mixed: torch.Tensor,
    tokens: torch.Tensor,
) -> torch.Tensor:
    """(batch, 4): the chosen token's log-prob under ref, aligned and realigned, and the KL."""
    ref_lp = ref_logits.float().log_softmax(-1)
    mixed_lp = mixed.log_softmax(-1)
    picked = tokens[:, None]
    return torch.stack(
        [
            ref_lp.gather(-1, picked)[:, 0],
            aligned_logits.float().log_softmax(-1).gather(-1, picked)[:, 0],
            mixed_lp.gather(-1, picked)[:, 0],
            kl_to_ref(mixed_lp, ref_lp),
        ],
        dim=-1,
    ).cpu()


def stream(
    pair: ModelPair,
    prompt_ids: Sequence[int],
    strengths: Sequence[float] | LiveStrengths,
    config: SamplingConfig | None = None,
) -> Generator[list[TokenUpdate], None, None]:
    """Decode one prompt at several strengths at once, yielding each step's new tokens.

    Each yield is a list with one `TokenUpdate` per sequence still running. Pass a
    `LiveStrengths` to change strengths while it runs; closing the generator stops the work
    before the next forward pass.
    """
    config = config or SamplingConfig()
    live = strengths if isinstance(strengths, LiveStrengths) else LiveStrengths(strengths)
    input_ids = _prompt_tensor(pair, prompt_ids)
    budget = min(config.max_new_tokens, pair.context_length - input_ids.shape[1])
    generator = torch.Generator().manual_seed(config.seed)
    texts = [TextStream(pair.tokenizer, config.stop_strings) for _ in range(len(live))]
    active = list(range(len(live)))  # sequence index of each batch row
    last: StopReason = "max_new_tokens" if budget == config.max_new_tokens else "context"
    runner = pair.runner()
    start, produced = time.perf_counter(), 0

    try:
        with torch.inference_mode():
            ref_logits, aligned_logits = runner.prefill(input_ids)
            if len(active) > 1:
                runner.expand(len(active))
                ref_logits = ref_logits.expand(len(active), -1)
                aligned_logits = aligned_logits.expand(len(active), -1)
            seen = None  # (batch, vocab) tokens generated so far, kept only for the penalty
            if config.repetition_penalty != 1.0:
                seen = torch.zeros(
                    len(active), pair.vocab_size, dtype=torch.bool, device=ref_logits.device
                )
            for step in range(budget):
                now = live.snapshot()
                row_strengths = [now[i] for i in active]
                mixed = mix_logits(ref_logits, aligned_logits, torch.tensor(row_strengths))
                noise = gumbel_noise(generator, pair.vocab_size) if config.temperature > 0 else None
                penalized = mixed
                if seen is not None:
                    penalized = penalize_repeats(
                        mixed, seen.to(mixed.device), config.repetition_penalty
                    )
                tokens = sample_tokens(
                    penalized,
                    temperature=config.temperature,
                    top_k=config.top_k,
                    top_p=config.top_p,
                    noise=noise,
                )
                stats = _token_stats(ref_logits, aligned_logits, mixed, tokens).tolist()
                updates = [
                    _update(
                        pair,
                        texts[index],
                        index,
                        row_strengths[row],
                        token,
                        stats[row],
                        last if step == budget - 1 else None,
                    )
                    for row, (index, token) in enumerate(zip(active, tokens.tolist(), strict=True))
                ]
                produced += len(updates)
                yield updates

                keep = [row for row, u in enumerate(updates) if u.stop_reason is None]
                if not keep:
                    return
                if len(keep) < len(active):
                    rows = torch.tensor(keep)
                    runner.keep(rows)
                    tokens = tokens[rows.to(tokens.device)]
                    seen = seen[rows.to(seen.device)] if seen is not None else None
                    active = [active[row] for row in keep]
                if seen is not None:
                    seen[torch.arange(len(active), device=seen.device), tokens.to(seen.device)] = (
                        True
                    )
                ref_logits, aligned_logits = runner.decode(tokens)
    finally:
        elapsed = time.perf_counter() - start
        logger.info(
            "Generated %d tokens over %d strengths in %.2f s (%.1f tokens/s)",
            produced,
            len(live),
            elapsed,
            produced / elapsed if elapsed else 0.0,
        )


def _update(
    pair: ModelPair,
    text_stream: TextStream,
    index: int,
    strength: float,
    token: int,
    stats: list[float],
    last: StopReason | None,
) -> TokenUpdate:
    """Detokenize one token and decide whether its sequence stops here."""
    reason: StopReason | None
    if token in pair.eos_token_ids:
        text, reason = text_stream.flush(), "eos"
    else:
        text, hit_stop = text_stream.push(token)
        reason = "stop_string" if hit_stop else last
        if reason in ("max_new_tokens", "context"):
            text += text_stream.flush()
    ref_lp, aligned_lp, lp, kl = stats
    return TokenUpdate(index, strength, token, text, ref_lp, aligned_lp, lp, kl, reason)


def generate(
    pair: ModelPair,
    prompt_ids: Sequence[int],
    strengths: Sequence[float] | LiveStrengths,
    config: SamplingConfig | None = None,
) -> list[Completion]:
    """Run `stream` to the end and collect one `Completion` per strength, in the given order."""
    initial = strengths.snapshot() if isinstance(strengths, LiveStrengths) else list(strengths)
    completions = [Completion(strength=float(s)) for s in initial]
    for updates in stream(pair, prompt_ids, strengths, config):
        for update in updates:
            completions[update.index].add(update)
    return completions
