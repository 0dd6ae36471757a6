"""The web app's boundary: input conversion, error handling, and the public API endpoints."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from dera_demo.engine import MAX_STRENGTHS, SamplingConfig
from dera_demo.render import parse_strengths, run_record
from dera_demo.service import Backend

logger = logging.getLogger(__name__)

MAX_NEW_TOKENS_UI = 1024
DEFAULT_STRENGTHS = "0, 1/6, 2/3, 1, 3"  # the paper's demo
# The web app's sampling defaults, for the UI and the API alike: the engine's, with shorter answers
# and a repetition penalty, since the embedded reference falls into emoji or word loops in about
# one answer in twenty without one, more at λ = 2 (its model card). Penalty 1 gives each model's
# own sampling exactly at λ = 0 and 1.
DEFAULTS = SamplingConfig(max_new_tokens=128, repetition_penalty=1.2)

GPU: Callable[[Callable[..., Any]], Callable[..., Any]]
try:  # On Hugging Face ZeroGPU Spaces, model-bound functions must hold a GPU while they run.
    import spaces

    GPU = spaces.GPU(duration=120)
except ImportError:

    def GPU(fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn


def user_errors(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """Show bad input as a gr.Error naming it; log anything else and keep the server serving."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, TypeError, IndexError, FileNotFoundError) as error:
            raise gr.Error(str(error)) from error
        except Exception as error:
            logger.exception("request failed")
            message = f"Generation failed ({type(error).__name__}: {error}). Please try again."
            raise gr.Error(message) from error

    return wrapper


def session_id(request: gr.Request | None) -> str:
    """The browser session's id; API calls without one each get their own."""
    return getattr(request, "session_hash", None) or f"api-{uuid.uuid4().hex}"


def _whole(name: str, value: float | None) -> int:
    if value is None or float(value) != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def sampling_config(
    temperature: float,
    top_p: float,
    top_k: float,
    max_new_tokens: float,
    seed: float,
    repetition_penalty: float,
) -> SamplingConfig:
    """Settings from the UI or the API, checked, with the web app's tighter length limit."""
    tokens = _whole("max_new_tokens", max_new_tokens)
    if not 1 <= tokens <= MAX_NEW_TOKENS_UI:
        raise ValueError(f"max_new_tokens must be from 1 to {MAX_NEW_TOKENS_UI}, got {tokens}")
    return SamplingConfig(
        max_new_tokens=tokens,
        temperature=temperature,
        top_k=_whole("top_k", top_k),
        top_p=top_p,
        seed=_whole("seed", seed),
        repetition_penalty=repetition_penalty,
    )


def register_api(backend: Backend) -> None:
    """Named endpoints for gradio_client, /generate and /compare, streaming JSON records."""

    @GPU
    @user_errors
    def generate(
        prompt: str,
        strength: float = 1.0,
        system: str = "",
        temperature: float = DEFAULTS.temperature,
        top_p: float = DEFAULTS.top_p,
        top_k: int = DEFAULTS.top_k,
        max_new_tokens: int = DEFAULTS.max_new_tokens,
        seed: int = DEFAULTS.seed,
        repetition_penalty: float = DEFAULTS.repetition_penalty,
    ) -> Iterator[dict[str, Any]]:
        """Stream one response at realignment strength λ (0 = SFT model, 1 = aligned model)."""
        config = sampling_config(
            temperature, top_p, top_k, max_new_tokens, seed, repetition_penalty
        )
        for run in backend.run(session_id(None), prompt, [strength], config, system=system):
            yield run_record(run)[0]

    @GPU
    @user_errors
    def compare(
        prompt: str,
        strengths: str = DEFAULT_STRENGTHS,
        system: str = "",
        temperature: float = DEFAULTS.temperature,
        top_p: float = DEFAULTS.top_p,
        top_k: int = DEFAULTS.top_k,
        max_new_tokens: int = DEFAULTS.max_new_tokens,
        seed: int = DEFAULTS.seed,
        repetition_penalty: float = DEFAULTS.repetition_penalty,
    ) -> Iterator[list[dict[str, Any]]]:
        """Stream responses at several comma-separated strengths, generated as one batch."""
        chosen = parse_strengths(strengths, MAX_STRENGTHS)
        config = sampling_config(
            temperature, top_p, top_k, max_new_tokens, seed, repetition_penalty
        )
        for run in backend.run(session_id(None), prompt, chosen, config, system=system):
            yield run_record(run)

    gr.api(generate, api_name="generate", concurrency_id="model")
    gr.api(compare, api_name="compare", concurrency_id="model")
