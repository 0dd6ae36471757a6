"""Forward passes of a model pair for one generation: prefill, decode, grow and shrink the batch.

Every runner returns `(ref_logits, aligned_logits)`, each (batch, vocab) cut to the shared
vocabulary, for the last position only.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, DynamicCache, PretrainedConfig

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch
ALIGNED_ADAPTER = "aligned"


def _last_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, cache: DynamicCache, vocab_size: int, **kw: Any
) -> torch.Tensor:
    # logits_to_keep=1 skips the LM head for every prompt position but the last.
    out = model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1, **kw)
    return out.logits[:, -1, :vocab_size]


def _config(model: torch.nn.Module) -> PretrainedConfig:
    return cast(PretrainedConfig, model.config)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class TwoModelRunner:
    """Two separate models, each with its own KV cache, run one after the other each step."""

    def __init__(self, ref: torch.nn.Module, aligned: torch.nn.Module, vocab_size: int) -> None:
        self.ref, self.aligned, self.vocab_size = ref, aligned, vocab_size
        self.ref_cache = DynamicCache(config=_config(ref))
        self.aligned_cache = DynamicCache(config=_config(aligned))

    def _both(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ref_ids = input_ids.to(_device(self.ref))
        aligned_ids = input_ids.to(_device(self.aligned))
        ref_logits = _last_logits(self.ref, ref_ids, self.ref_cache, self.vocab_size)
        aligned_logits = _last_logits(
            self.aligned, aligned_ids, self.aligned_cache, self.vocab_size
        )
        return ref_logits, aligned_logits.to(ref_logits.device)

    def prefill(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids: (1, prompt_len)."""
        return self._both(input_ids)

    def expand(self, batch_size: int) -> None:
        """Copy the single prefilled row to `batch_size` rows, one per strength."""
        self.ref_cache.batch_repeat_interleave(batch_size)
        self.aligned_cache.batch_repeat_interleave(batch_size)

    def decode(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """token_ids: (batch,), the tokens just sampled."""
        return self._both(token_ids[:, None])

    def keep(self, rows: torch.Tensor) -> None:
        """Drop finished sequences: keep only `rows` (indices into the current batch)."""
        self.ref_cache.batch_select_indices(rows.to(_device(self.ref)))
        self.aligned_cache.batch_select_indices(rows.to(_device(self.aligned)))


class SharedBaseRunner:
    """One base model carrying the aligned LoRA adapter: each forward batches the reference rows
    (adapter off) and the aligned rows (adapter on) together, [ref rows | aligned rows]."""

    # NOTE: PEFT's mixed-adapter forward registers hooks and gathers rows in every LoRA layer on
    # every call; on the CPU that made this path slower than two copies at three strengths and on
    # tiny models (README, Performance), so it is opt-in. Its hooks also make it unsafe to run
    # two generations on one model from two threads at once.

    def __init__(self, model: torch.nn.Module, vocab_size: int) -> None:
        self.model, self.vocab_size = model, vocab_size
        self.cache = DynamicCache(config=_config(model))
        self.batch_size = 1

    def _both(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        names = [BASE_ADAPTER] * self.batch_size + [ALIGNED_ADAPTER] * self.batch_size
        ids = torch.cat([input_ids, input_ids]).to(_device(self.model))
        logits = _last_logits(self.model, ids, self.cache, self.vocab_size, adapter_names=names)
        return logits[: self.batch_size], logits[self.batch_size :]

    def prefill(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._both(input_ids)

    def expand(self, batch_size: int) -> None:
        rows = torch.tensor([0] * batch_size + [1] * batch_size)
        self.cache.batch_select_indices(rows.to(_device(self.model)))
        self.batch_size = batch_size

    def decode(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._both(token_ids[:, None])

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(
            torch.cat([rows, rows + self.batch_size]).to(_device(self.model))
        )
        self.batch_size = len(rows)


def load_shared_base(
    ref_source: str, adapter_source: str, model_kwargs: dict[str, object]
) -> torch.nn.Module:
    """The reference model with the aligned adapter attached but not merged."""
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(ref_source, trust_remote_code=False, **model_kwargs)
    model = PeftModel.from_pretrained(base, adapter_source, adapter_name=ALIGNED_ADAPTER)
    return model.eval()
