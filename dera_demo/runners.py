"""Forward passes of a model pair for one generation: prefill, decode, grow and shrink the batch.

Every runner returns `(ref_logits, aligned_logits)`, each (batch, vocab) cut to the shared
vocabulary, for the last position only.
"""

from __future__ import annotations

import contextvars
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, DynamicCache, PretrainedConfig

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


# How many leading rows of the current batch run without the adapter; None outside a shared-base
# forward. A context variable, so concurrent generations in other threads are not affected.
_REF_ROWS: contextvars.ContextVar[int | None] = contextvars.ContextVar("ref_rows", default=None)


def _split_lora_forward(layer: Any, original: Any) -> Any:
    """A LoRA layer forward that adds the adapter's update to the aligned rows only.

    The batch is laid out [ref rows | aligned rows], so both halves are plain slices: one base
    matmul for all rows, one LoRA matmul for the aligned half, no per-row gathering.
    """

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        ref_rows = _REF_ROWS.get()
        if ref_rows is None:
            return original(x, *args, **kwargs)
        result = layer.base_layer(x, *args, **kwargs)
        lora_a, lora_b = layer.lora_A[ALIGNED_ADAPTER], layer.lora_B[ALIGNED_ADAPTER]
        aligned_x = x[ref_rows:].to(lora_a.weight.dtype)
        update = lora_b(lora_a(aligned_x)) * layer.scaling[ALIGNED_ADAPTER]
        result[ref_rows:] += update.to(result.dtype)
        return result

    return forward


def _install_split_forwards(model: torch.nn.Module) -> None:
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer) and ALIGNED_ADAPTER in module.lora_A:
            # NOTE: the split forward reproduces plain LoRA only; DoRA and other variants change
            # the update's form, so such adapters must use two copies (README, Limitations).
            if module.lora_variant.get(ALIGNED_ADAPTER) is not None:
                raise ValueError("shared_base supports plain LoRA adapters, not DoRA or variants")
            module.forward = _split_lora_forward(module, module.forward)


class SharedBaseRunner:
    """One base model carrying the aligned LoRA adapter: each forward batches the reference rows
    (adapter off) and the aligned rows (adapter on) together, [ref rows | aligned rows]."""

    def __init__(self, model: torch.nn.Module, vocab_size: int) -> None:
        self.model, self.vocab_size = model, vocab_size
        self.cache = DynamicCache(config=_config(model))
        self.batch_size = 1

    def _both(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.cat([input_ids, input_ids]).to(_device(self.model))
        token = _REF_ROWS.set(self.batch_size)
        try:
            logits = _last_logits(self.model, ids, self.cache, self.vocab_size)
        finally:
            _REF_ROWS.reset(token)
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
        both = torch.cat([rows, rows + self.batch_size]).to(_device(self.model))
        self.cache.batch_select_indices(both)
        self.batch_size = len(rows)


def load_shared_base(
    ref_source: str, adapter_source: str, model_kwargs: dict[str, object]
) -> torch.nn.Module:
    """The reference model with the aligned adapter attached but not merged."""
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(ref_source, trust_remote_code=False, **model_kwargs)
    model = PeftModel.from_pretrained(base, adapter_source, adapter_name=ALIGNED_ADAPTER)
    _install_split_forwards(model)
    return model.eval()
