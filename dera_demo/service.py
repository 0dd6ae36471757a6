"""The web app's backend: which pair is loaded, and streaming runs that a session can steer or stop.

The UI talks only to `Backend`, so it can be built and tested with a fake one and no weights.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

from dera_demo.engine import LiveStrengths, SamplingConfig, StopReason, stream
from dera_demo.models import PRECISIONS, ModelPair, Precision, load_pair
from dera_demo.presets import DEFAULT_PRESET, PRESETS, resolve
from dera_demo.prompts import encode_prompt

CUSTOM_PAIR = "custom"
MAX_PROMPT_CHARS = 8000


@dataclass
class SequenceView:
    """What the UI shows of one sequence: its text so far and per-token evidence."""

    strength: float
    text: str = ""
    # (text piece, aligned minus reference log-probability of its token, in nats)
    pieces: list[tuple[str, float]] = field(default_factory=list)
    tokens: int = 0
    stop_reason: StopReason | None = None


@dataclass
class RunView:
    """One step of a run as the UI sees it."""

    sequences: list[SequenceView]
    first_token_s: float | None = None
    tokens_per_s: float | None = None
    done: bool = False
    warning: str | None = None


@dataclass
class _Session:
    live: LiveStrengths
    cancel: threading.Event = field(default_factory=threading.Event)


class Backend:
    """Loads one pair at a time and runs generations for browser sessions."""

    def __init__(
        self,
        pair_name: str = DEFAULT_PRESET,
        *,
        precision: Precision = "4bit",
        locked: bool = False,
        custom: tuple[str, str] | None = None,
        shared_base: bool | None = None,
    ) -> None:
        self.precision: Precision = precision
        self.shared_base = shared_base
        self.locked = locked
        self._name, self._custom = pair_name, custom
        self._pair: ModelPair | None = None
        self._load_lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}

    @classmethod
    def from_env(cls) -> Backend:
        """Settings for hosting: `DERA_PAIR` (a preset, or "custom" with `DERA_REF` and
        `DERA_ALIGNED`) locks the app to one pair; `DERA_PRECISION` is 4bit, 8bit or none;
        `DERA_SHARED_BASE=0` keeps two copies of the base for an adapter pair."""
        precision = os.environ.get("DERA_PRECISION", "4bit")
        if precision not in PRECISIONS:
            raise ValueError(f"DERA_PRECISION must be one of {PRECISIONS}, got {precision!r}")
        name = os.environ.get("DERA_PAIR", "").strip()
        custom = (os.environ.get("DERA_REF", ""), os.environ.get("DERA_ALIGNED", ""))
        two_copies = os.environ.get("DERA_SHARED_BASE", "").strip() in ("0", "false", "no")
        backend = cls(
            DEFAULT_PRESET,
            precision=cast(Precision, precision),
            locked=bool(name),
            shared_base=False if two_copies else None,
        )
        if name:
            backend._name = ""  # let select() accept the locked pair
            backend.select(name, *custom)
        return backend

    # Pairs ----------------------------------------------------------------------------------
    def pair_names(self) -> list[str]:
        return [self._name] if self.locked else [*PRESETS, CUSTOM_PAIR]

    @property
    def pair_name(self) -> str:
        return self._name

    def describe(self) -> str:
        if self._name == CUSTOM_PAIR and self._custom:
            return f"custom: {self._custom[0]} + {self._custom[1]}"
        return PRESETS[self._name].note if self._name in PRESETS else self._name

    def select(self, name: str, ref: str = "", aligned: str = "") -> str:
        """Switch to another pair; it loads at the next request. Returns its description."""
        if self.locked and self._name and name != self._name:
            raise ValueError(f"this app is locked to the pair {self._name!r}")
        if name == CUSTOM_PAIR:
            if not ref.strip() or not aligned.strip():
                raise ValueError("a custom pair needs both a reference and an aligned model")
            custom: tuple[str, str] | None = (ref.strip(), aligned.strip())
        elif name in PRESETS:
            custom = None
        else:
            raise ValueError(f"unknown pair {name!r}; choose one of {', '.join(self.pair_names())}")
        with self._load_lock:
            if (name, custom) != (self._name, self._custom):
                self._name, self._custom, self._pair = name, custom, None
        return self.describe()

    def pair(self) -> ModelPair:
        """The selected pair, loaded on first use (never at import time)."""
        with self._load_lock:
            if self._pair is None:
                ref: str | Path
                aligned: str | Path
                if self._custom is not None:
                    ref, aligned = self._custom
                else:
                    ref, aligned = resolve(self._name)
                shared = None if self.shared_base is not False else False
                self._pair = load_pair(ref, aligned, precision=self.precision, shared_base=shared)
            return self._pair

    # Runs -----------------------------------------------------------------------------------
    def set_strength(self, session_id: str, index: int, strength: float) -> bool:
        """Steer a running generation; False when the session has none running."""
        session = self._sessions.get(session_id)
        if session is None or index >= len(session.live):
            return False
        session.live.set(index, strength)
        return True

    def is_running(self, session_id: str) -> bool:
        return session_id in self._sessions

    def stop(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.cancel.set()

    def run(
        self,
        session_id: str,
        prompt: str,
        strengths: Sequence[float],
        config: SamplingConfig,
        *,
        system: str | None = None,
        min_interval_s: float = 0.08,
    ) -> Iterator[RunView]:
        """Stream a generation, yielding at most every `min_interval_s` so the page stays smooth."""
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        live = LiveStrengths(strengths)
        pair = self.pair()
        prompt_ids = encode_prompt(pair.tokenizer, prompt, system=system)
        config, warning = _fit_context(pair, len(prompt_ids), config)
        session = _Session(live)
        self.stop(session_id)  # a new run from the same session replaces the old one
        self._sessions[session_id] = session
        try:
            yield from _views(pair, prompt_ids, session, config, warning, min_interval_s)
        finally:
            if self._sessions.get(session_id) is session:
                del self._sessions[session_id]


def _fit_context(
    pair: ModelPair, prompt_tokens: int, config: SamplingConfig
) -> tuple[SamplingConfig, str | None]:
    room = pair.context_length - prompt_tokens
    if room < 1:
        raise ValueError(
            f"prompt is {prompt_tokens} tokens; the model's context holds {pair.context_length}"
        )
    if config.max_new_tokens <= room:
        return config, None
    fitted = replace(config, max_new_tokens=room)
    return (
        fitted,
        f"max new tokens lowered from {config.max_new_tokens} to {room} to fit the context",
    )


def _views(
    pair: ModelPair,
    prompt_ids: list[int],
    session: _Session,
    config: SamplingConfig,
    warning: str | None,
    min_interval_s: float,
) -> Iterator[RunView]:
    views = [SequenceView(strength=s) for s in session.live.snapshot()]
    start = time.perf_counter()
    first: float | None = None
    last_yield = 0.0
    produced = 0
    steps = stream(pair, prompt_ids, session.live, config)
    try:
        for updates in steps:
            first = first or time.perf_counter() - start
            for u in updates:
                view = views[u.index]
                view.strength, view.text, view.tokens = (
                    u.strength,
                    view.text + u.text,
                    view.tokens + 1,
                )
                view.stop_reason = u.stop_reason
                if u.text:
                    view.pieces.append((u.text, u.aligned_log_prob - u.ref_log_prob))
            produced += len(updates)
            if session.cancel.is_set():
                break
            now = time.perf_counter()
            if now - last_yield >= min_interval_s:
                last_yield = now
                yield RunView(views, first, produced / (now - start), warning=warning)
    finally:
        steps.close()  # stops the engine before its next forward pass
    elapsed = time.perf_counter() - start
    yield RunView(views, first, produced / elapsed if elapsed else None, done=True, warning=warning)
