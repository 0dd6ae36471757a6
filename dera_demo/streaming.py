"""Incremental detokenization with stop strings, one `TextStream` per generated sequence."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers.decoders import DecodeStream
from transformers import PreTrainedTokenizerBase


class _DiffDecoder:
    """Fallback for tokenizers without a Rust backend: decode everything, emit what is new."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._length = 0

    def step(self, token_id: int) -> str | None:
        self._ids.append(token_id)
        text = str(self._tokenizer.decode(self._ids, skip_special_tokens=True))
        if text.endswith("\ufffd"):  # a multi-byte character is still incomplete
            return None
        new, self._length = text[self._length :], len(text)
        return new


class TextStream:
    """Turn token ids into text pieces, holding back text that may be the start of a stop string.

    `push` returns the text that is safe to show and whether a stop string was completed; the
    stop string itself and anything after it are never shown. `flush` releases held-back text
    once the sequence has ended for another reason.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, stop_strings: Sequence[str] = ()
    ) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(
            tokenizer, "_tokenizer", None
        )
        if backend is not None:
            self._backend = backend
            self._decoder: DecodeStream | _DiffDecoder = DecodeStream(skip_special_tokens=True)
        else:
            self._decoder = _DiffDecoder(tokenizer)
        self._stop_strings = tuple(s for s in stop_strings if s)
        self.text = ""
        self._shown = 0

    def _decode(self, token_id: int) -> str:
        if isinstance(self._decoder, DecodeStream):
            piece = self._decoder.step(self._backend, token_id)
        else:
            piece = self._decoder.step(token_id)
        return piece or ""

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add one token; return (text to show now, whether a stop string was completed)."""
        self.text += self._decode(token_id)
        for stop in self._stop_strings:
            # Search from just before the unseen text: a stop string may straddle the boundary.
            index = self.text.find(stop, max(0, self._shown - len(stop) + 1))
            if index != -1:
                self.text = self.text[:index]
                return self._release(len(self.text)), True
        return self._release(len(self.text) - self._held_back()), False

    def flush(self) -> str:
        """Release any text held back for a stop string that never completed."""
        return self._release(len(self.text))

    def _held_back(self) -> int:
        """Length of the longest end of the text that begins some stop string."""
        longest = 0
        for stop in self._stop_strings:
            for size in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _release(self, end: int) -> str:
        end = max(end, self._shown)
        piece, self._shown = self.text[self._shown : end], end
        return piece
