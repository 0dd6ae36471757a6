"""A rule-based reward for the style the embedded adapter is aligned toward.

The target behaviour is a *warm, encouraging and concise* answer instead of a flat one, a
difference a person sees in a single reply. The reward needs no model and is deterministic, so
the preference pairs it orders can be rebuilt exactly. It is the sum of five components:

| component     | value                                                             | range        |
|---------------|-------------------------------------------------------------------|--------------|
| `warmth`      | +0.5 per distinct warm or encouraging phrase (see `WARM_PHRASES`) | 0 to +2.0    |
| `exclamation` | +0.25 per "!" up to 2, then -0.25 per "!" beyond 4                | +0.5 at most |
| `length`      | -0.02 per word beyond 120 words                                   | 0 to -3.0    |
| `repetition`  | -4 times the share of repeated word 3-grams (a loop is near 1)    | 0 to -4.0    |
| `empty`       | -2 for an answer without a single word                            | 0 or -2.0    |

A fluent, on-topic warm answer scores about +1 to +2.5, the same answer flat about 0, a
degenerate loop -2 or less. The reward cannot see whether an answer is correct or on topic; only
the repetition term guards fluency. That is why the preference pairs built from it keep the
reference model's own answer as the content of both sides (see `dera_demo.train`).
"""

from __future__ import annotations

import re

WARM_PHRASES: tuple[str, ...] = (
    "great question",
    "good question",
    "love this",
    "happy to help",
    "glad you asked",
    "you've got this",
    "you can do it",
    "you'll do great",
    "don't worry",
    "keep going",
    "keep it up",
    "good luck",
    "have fun",
    "enjoy",
    "wonderful",
    "fantastic",
    "exciting",
    "delightful",
    "proud of you",
    "cheering for you",
    "well done",
    "i hope this helps",
    "step at a time",
    "rewarding",
)
WARMTH_WEIGHT = 0.5
WARMTH_CAP = 2.0
EXCLAMATION_WEIGHT = 0.25
EXCLAMATIONS_PAID = 2
EXCLAMATIONS_FREE = 4
CONCISE_WORDS = 120
LENGTH_WEIGHT = 0.02
LENGTH_CAP = 3.0
REPETITION_WEIGHT = 4.0
REPETITION_NGRAM = 3
EMPTY_PENALTY = 2.0

_WORD = re.compile(r"[a-z0-9']+")
_WARM_PATTERNS = tuple(re.compile(rf"\b{re.escape(p)}\b") for p in WARM_PHRASES)


def _words(text: str) -> list[str]:
    # Curly apostrophes are folded so "you’ve got this" matches like "you've got this".
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def warmth(text: str) -> float:
    """+0.5 for each distinct warm or encouraging phrase, capped at +2."""
    lowered = " ".join(_words(text))
    hits = sum(1 for pattern in _WARM_PATTERNS if pattern.search(lowered))
    return min(WARMTH_WEIGHT * hits, WARMTH_CAP)


def exclamation(text: str) -> float:
    """+0.25 for each of the first two "!", nothing for the next two, -0.25 for each beyond."""
    count = text.count("!")
    paid = EXCLAMATION_WEIGHT * min(count, EXCLAMATIONS_PAID)
    spam = EXCLAMATION_WEIGHT * max(count - EXCLAMATIONS_FREE, 0)
    return paid - spam


def length(text: str) -> float:
    """-0.02 for each word beyond 120, at most -3."""
    excess = max(len(_words(text)) - CONCISE_WORDS, 0)
    return -min(LENGTH_WEIGHT * excess, LENGTH_CAP)


def repetition(text: str) -> float:
    """-4 times the share of word 3-grams that already occurred earlier in the answer."""
    words = _words(text)
    ngrams = [tuple(words[i : i + REPETITION_NGRAM]) for i in range(len(words) - 2)]
    if not ngrams:
        return 0.0
    repeated = len(ngrams) - len(set(ngrams))
    return -REPETITION_WEIGHT * repeated / len(ngrams)


def empty(text: str) -> float:
    """-2 for an answer that holds no word at all."""
    return -EMPTY_PENALTY if not _words(text) else 0.0


def reward_breakdown(text: str) -> dict[str, float]:
    """Each component of `reward(text)` by name; the values sum to the reward."""
    return {
        "warmth": warmth(text),
        "exclamation": exclamation(text),
        "length": length(text),
        "repetition": repetition(text),
        "empty": empty(text),
    }


def reward(text: str) -> float:
    """Score one answer for warm, encouraging, concise style; higher is better."""
    return sum(reward_breakdown(text).values())
