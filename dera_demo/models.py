"""Loading a reference (SFT) model and an aligned model as one checked pair."""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast
from urllib.parse import urlparse

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from dera_demo.runners import SharedBaseRunner, TwoModelRunner, load_shared_base

logger = logging.getLogger(__name__)

Precision = Literal["4bit", "8bit", "none"]
PRECISIONS: tuple[Precision, ...] = ("4bit", "8bit", "none")
THREADS_ENV = "DERA_NUM_THREADS"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SPECIAL_ATTRS = ("bos_token", "eos_token", "unk_token")


class PairRunner(Protocol):
    """Both models' forward passes for one generation, each with its own cache state."""

    def prefill(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def expand(self, batch_size: int) -> None: ...
    def decode(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def keep(self, rows: torch.Tensor) -> None: ...


@dataclass
class ModelPair:
    """A reference model and an aligned model that share one tokenizer.

    With `shared_base`, `aligned` is None and `ref` is a PEFT model whose adapter named
    "aligned" turns the reference into the aligned model, so one copy of the weights serves both.
    """

    ref: torch.nn.Module
    aligned: torch.nn.Module | None
    tokenizer: PreTrainedTokenizerBase
    vocab_size: int
    context_length: int
    eos_token_ids: frozenset[int]
    device: torch.device
    precision: Precision
    ref_name: str
    aligned_name: str
    shared_base: bool = False

    def runner(self) -> PairRunner:
        """A fresh pair of caches for one generation."""
        if self.shared_base:
            return SharedBaseRunner(self.ref, self.vocab_size)
        assert self.aligned is not None  # invariant of the constructor, not an input check
        return TwoModelRunner(self.ref, self.aligned, self.vocab_size)


def configure_threads() -> None:
    """Apply `$DERA_NUM_THREADS` to torch; on 2 cores one thread was fastest for small models."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
    torch.set_num_threads(int(value))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_source(name: str | Path) -> str:
    """Return a model location as a string; a path that looks local must exist."""
    text = str(name).strip()
    if not text:
        raise ValueError("model location must be a hub id or a local directory, got ''")
    if Path(text).expanduser().exists():
        return str(Path(text).expanduser())
    if not _HUB_ID.match(text) or text.startswith((".", "/", "~")):
        raise ValueError(f"no model directory at {text!r} (and it is not a hub id like org/name)")
    return text


def is_adapter(source: str) -> bool:
    """True when `source` is a local PEFT adapter folder."""
    # NOTE: a hub id is not looked up, so an adapter on the hub loads as a full model and fails;
    # giving it as a local folder works (README, Limitations).
    return (Path(source) / "adapter_config.json").is_file()


def _offline_error(source: str) -> ValueError:
    return ValueError(
        f"model {source!r} is not available without network access: it is not a local folder, "
        "not in the Hugging Face cache, and the Hub could not be reached or has no such model"
    )


def _check_hub(source: str) -> None:
    """Fail fast for a hub id neither cached nor reachable, rather than after minutes of retries."""
    from huggingface_hub import constants, try_to_load_from_cache

    if Path(source).exists() or constants.HF_HUB_OFFLINE:
        return
    if isinstance(try_to_load_from_cache(source, "config.json"), str):
        return
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as error:
        raise _offline_error(source) from error


def _from_pretrained(loader: Any, source: str, **kwargs: Any) -> Any:
    """Call `loader.from_pretrained`, turning a failed hub fetch into a clear ValueError."""
    _check_hub(source)
    try:
        return loader.from_pretrained(source, trust_remote_code=False, **kwargs)
    except OSError as error:
        if Path(source).exists():
            raise ValueError(f"could not load {source!r}: {error}") from error
        raise _offline_error(source) from error


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    return cast(PreTrainedTokenizerBase, _from_pretrained(AutoTokenizer, source))


def load_model(source: str, precision: Precision, device: torch.device) -> PreTrainedModel:
    model = _from_pretrained(AutoModelForCausalLM, source, **_model_kwargs(precision, device))
    return cast(PreTrainedModel, model.eval())


def _model_kwargs(precision: Precision, device: torch.device) -> dict[str, object]:
    # NF4 computes in bf16 on CUDA; on the CPU fp32 compute was measured faster than bf16.
    compute = torch.bfloat16 if device.type == "cuda" else torch.float32
    kwargs: dict[str, object] = {"dtype": compute, "device_map": {"": str(device)}}
    if precision == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute
        )
    elif precision == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    return kwargs


def check_tokenizers(
    ref_tokenizer: PreTrainedTokenizerBase,
    aligned_tokenizer: PreTrainedTokenizerBase,
    ref_name: str,
    aligned_name: str,
) -> None:
    """Raise ValueError unless both tokenizers map the shared vocabulary and special tokens alike.

    One tokenizer may have extra tokens past the other's end (a padded vocabulary); only the
    shared ids are mixed.
    """
    differences = []
    ref_vocab = {i: t for t, i in ref_tokenizer.get_vocab().items()}
    aligned_vocab = {i: t for t, i in aligned_tokenizer.get_vocab().items()}
    shared = min(len(ref_vocab), len(aligned_vocab))
    mismatched = [i for i in range(shared) if ref_vocab.get(i) != aligned_vocab.get(i)]
    if mismatched:
        i = mismatched[0]
        differences.append(
            f"{len(mismatched)} of {shared} shared token ids differ "
            f"(first: id {i} is {ref_vocab.get(i)!r} vs {aligned_vocab.get(i)!r})"
        )
    for attr in _SPECIAL_ATTRS:
        ref_value, aligned_value = getattr(ref_tokenizer, attr), getattr(aligned_tokenizer, attr)
        if ref_value != aligned_value:
            differences.append(f"{attr} is {ref_value!r} vs {aligned_value!r}")
    if differences:
        raise ValueError(
            f"reference {ref_name!r} and aligned {aligned_name!r} do not share a tokenizer, "
            "so their logits cannot be mixed: " + "; ".join(differences)
        )


def _output_width(model: Any) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def _eos_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(int(i) for i in ids)


def _memory_note(models: list[Any], device: torch.device) -> str:
    weights = sum(m.get_memory_footprint() for m in models) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    note = f"weights {weights:.0f} MiB, peak RSS {rss:.0f} MiB"
    if device.type == "cuda":
        note += f", CUDA allocated {torch.cuda.memory_allocated(device) / 2**20:.0f} MiB"
    return note


def _adapter_base(source: str) -> str | None:
    config = json.loads((Path(source) / "adapter_config.json").read_text())
    return config.get("base_model_name_or_path")


def _load_adapter(
    ref_source: str, adapter_source: str, precision: Precision, device: torch.device
) -> torch.nn.Module:
    """The reference weights with the adapter applied, as their own copy."""
    from peft import PeftModel

    base = load_model(ref_source, precision, device)
    try:
        model = PeftModel.from_pretrained(base, adapter_source, adapter_name="aligned")
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"adapter {adapter_source!r} does not fit reference {ref_source!r} "
            f"(trained on {_adapter_base(adapter_source)!r}): {error}"
        ) from error
    # NOTE: folding LoRA into NF4/int8 weights would requantize them and add rounding error, so
    # quantized pairs keep the adapter as a separate (slightly slower) branch.
    return (model.merge_and_unload() if precision == "none" else model).eval()


def load_pair(
    ref: str | Path,
    aligned: str | Path,
    *,
    precision: Precision = "4bit",
    device: str | torch.device | None = None,
    shared_base: bool | None = None,
) -> ModelPair:
    """Load a reference and an aligned model, each a hub id or a local folder.

    `aligned` may be a PEFT LoRA adapter folder whose base is `ref`. Then `shared_base` (the
    default for adapters; False keeps two copies) loads the weights once and runs both models in
    one batched forward.
    Precision "4bit" is NF4 through bitsandbytes; the device defaults to CUDA when present.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device) if device is not None else default_device()
    ref_source, aligned_source = check_source(ref), check_source(aligned)
    adapter = is_adapter(aligned_source)
    if shared_base and not adapter:
        raise ValueError(f"shared_base needs a LoRA adapter as the aligned model, got {aligned!r}")
    shared_base = adapter if shared_base is None else shared_base

    start = time.perf_counter()
    tokenizer = load_tokenizer(ref_source)
    if not adapter or (Path(aligned_source) / "tokenizer_config.json").is_file():
        check_tokenizers(tokenizer, load_tokenizer(aligned_source), ref_source, aligned_source)

    aligned_model: torch.nn.Module | None
    if shared_base:
        ref_model = load_shared_base(ref_source, aligned_source, _model_kwargs(precision, device))
        aligned_model = None
    elif adapter:
        ref_model = load_model(ref_source, precision, device)
        aligned_model = _load_adapter(ref_source, aligned_source, precision, device)
    else:
        ref_model = load_model(ref_source, precision, device)
        aligned_model = load_model(aligned_source, precision, device)
    models = [m for m in (ref_model, aligned_model) if m is not None]

    pair = ModelPair(
        ref=ref_model,
        aligned=aligned_model,
        tokenizer=tokenizer,
        vocab_size=min([*(_output_width(m) for m in models), len(tokenizer)]),
        context_length=int(getattr(ref_model.config, "max_position_embeddings", 2048)),
        eos_token_ids=_eos_ids(ref_model, tokenizer),
        device=device,
        precision=precision,
        ref_name=ref_source,
        aligned_name=aligned_source,
        shared_base=shared_base,
    )
    logger.info(
        "Loaded %s + %s on %s, precision %s%s in %.1f s; %s",
        ref_source,
        aligned_source,
        device,
        precision,
        " (shared base)" if shared_base else "",
        time.perf_counter() - start,
        _memory_note(models, device),
    )
    return pair
