"""Turning a user's prompt into token ids, through the chat template when the tokenizer has one."""

from __future__ import annotations

import re
import uuid
from typing import Any

from transformers import PreTrainedTokenizerBase


def _template_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> list[int]:
    ids: Any = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def _spells_special_token(tokenizer: PreTrainedTokenizerBase, text: str) -> bool:
    return any(token in text for token in tokenizer.all_special_tokens if token)


def _escaped_template_ids(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]
) -> list[int]:
    """Render the template around placeholders, then encode the user's text with special-token
    strings split into ordinary pieces, so `<|im_start|>` typed by a user stays plain text."""
    marks = {f"\x00{uuid.uuid4().hex}\x00": m["content"] for m in messages}
    placeholders = [{**m, "content": mark} for m, mark in zip(messages, marks, strict=True)]
    rendered = tokenizer.apply_chat_template(
        placeholders, add_generation_prompt=True, tokenize=False
    )
    ids: list[int] = []
    for part in re.split("(" + "|".join(map(re.escape, marks)) + ")", str(rendered)):
        if part in marks:
            ids += tokenizer.encode(
                marks[part], add_special_tokens=False, split_special_tokens=True
            )
        elif part:
            ids += tokenizer.encode(part, add_special_tokens=False)
    return ids


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    *,
    system: str | None = None,
    raw: bool = False,
) -> list[int]:
    """Token ids for `prompt`, formatted by the chat template unless `raw` or there is none.

    Text that spells out a special token (such as `<|im_start|>`) is encoded as text, never as the
    control token, in the prompt and the system prompt alike.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be non-empty text, got {prompt!r}")
    if system is not None and not isinstance(system, str):
        raise TypeError(f"system must be text or None, got {system!r}")

    if raw or not tokenizer.chat_template:
        text = prompt if system is None or not system.strip() else f"{system}\n\n{prompt}"
        ids = tokenizer.encode(text, add_special_tokens=True, split_special_tokens=True)
        return list(ids)

    messages = [{"role": "user", "content": prompt}]
    if system is not None and system.strip():
        messages.insert(0, {"role": "system", "content": system})
    if any(_spells_special_token(tokenizer, m["content"]) for m in messages):
        return _escaped_template_ids(tokenizer, messages)
    return _template_ids(tokenizer, messages)
