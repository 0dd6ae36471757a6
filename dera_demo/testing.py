"""Tiny random model pairs with their own tokenizer, built in seconds and offline.

Used by the tests and by the benchmark's overhead measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Realignment mixes the logits of two models at decoding time.",
    "Bake the bread for forty minutes, then let it cool on a rack!",
    "東京は日本の首都です。こんにちは、世界。中文字符也在这里。",
    "Emoji: 🙂 🚀 👍🏽 ❤️ 🎉 and more text after them.",
    "Café, naïve, résumé, jalapeño: accents are bytes too.",
]


# Headless Chromium flags that work on machines without a display or outside network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class TinyPair:
    ref_dir: Path
    aligned_dir: Path
    adapter_dir: Path
    tokenizer: PreTrainedTokenizerFast


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer small enough to train in a test, with ChatML."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def tiny_config(vocab_size: int, tokenizer: PreTrainedTokenizerFast, context: int) -> LlamaConfig:
    # Widths are multiples of 64 so bitsandbytes can quantize every linear layer to NF4.
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def build_model(
    seed: int, vocab_size: int, tokenizer: PreTrainedTokenizerFast, *, context: int = 96
) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(vocab_size, tokenizer, context))
    # Random init gives nearly flat logits; a larger head makes tokens (and ties) distinct.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def save_adapter(ref: LlamaForCausalLM, out: Path, seed: int) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(ref, config)
    peft_model.save_pretrained(str(out))
    peft_model.unload()


def build_tiny_pair(root: Path, *, context: int = 96) -> TinyPair:
    """Save a reference, an aligned model and a LoRA adapter on the reference under `root`."""
    tokenizer = build_tokenizer()
    vocab = len(tokenizer)
    for name, seed in (("ref", 0), ("aligned", 1)):
        build_model(seed, vocab, tokenizer, context=context).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    save_adapter(build_model(0, vocab, tokenizer, context=context), root / "adapter", seed=2)
    return TinyPair(root / "ref", root / "aligned", root / "adapter", tokenizer)
