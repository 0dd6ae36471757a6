"""Named model pairs: the embedded offline default and pairs from the hub."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dera_demo import embedded


@dataclass(frozen=True)
class Preset:
    name: str
    ref: str
    aligned: str
    note: str


DEFAULT_PRESET = "smollm2-warm"
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            DEFAULT_PRESET,
            "embedded:SmolLM2-135M-Instruct",
            "embedded:smollm2-warm-adapter",
            "SmolLM2-135M-Instruct and our warm-style DPO adapter; offline, runs on a CPU",
        ),
        Preset(
            "zephyr-7b",
            "HuggingFaceH4/mistral-7b-sft-beta",
            "HuggingFaceH4/zephyr-7b-beta",
            "the paper's pair: Mistral 7B SFT and Zephyr 7B (DPO); needs network and a GPU",
        ),
        Preset(
            "olmo2-1b",
            "allenai/OLMo-2-0425-1B-SFT",
            "allenai/OLMo-2-0425-1B-DPO",
            "OLMo 2 1B SFT and DPO; needs network",
        ),
        Preset(
            "tulu3-8b",
            "allenai/Llama-3.1-Tulu-3-8B-SFT",
            "allenai/Llama-3.1-Tulu-3-8B-DPO",
            "Tulu 3 8B SFT and DPO; needs network and a GPU",
        ),
    )
}


def resolve(name: str) -> tuple[str | Path, str | Path]:
    """The (ref, aligned) locations of a preset; the embedded pair is prepared on first use."""
    if name not in PRESETS:
        raise ValueError(f"unknown pair {name!r}; choose one of {', '.join(PRESETS)}")
    if name == DEFAULT_PRESET:
        return embedded.reference_dir(), embedded.adapter_dir()
    preset = PRESETS[name]
    return preset.ref, preset.aligned
