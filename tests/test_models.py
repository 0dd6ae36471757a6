import re

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from dera_demo.engine import SamplingConfig, generate
from dera_demo.models import check_tokenizers, configure_threads, load_pair
from dera_demo.prompts import encode_prompt
from dera_demo.testing import CORPUS, build_model, build_tokenizer


def test_eight_bit_pairs_load_and_reproduce_the_reference(tiny_pair):
    pair = load_pair(tiny_pair.ref_dir, tiny_pair.aligned_dir, precision="8bit", device="cpu")
    ids = encode_prompt(pair.tokenizer, "Bake the bread")
    (completion,) = generate(pair, ids, [0.0], SamplingConfig(max_new_tokens=8, temperature=0.0))
    own = pair.ref.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
    assert completion.token_ids == own[0, len(ids) :].tolist()


def test_four_bit_layers_are_quantized(tiny_pair):
    import bitsandbytes as bnb

    pair = load_pair(tiny_pair.ref_dir, tiny_pair.aligned_dir, precision="4bit", device="cpu")
    assert isinstance(pair.ref.model.layers[0].mlp.up_proj, bnb.nn.Linear4bit)
    assert isinstance(pair.aligned.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)


def test_a_padded_vocabulary_mixes_only_the_shared_tokens(tiny_pair, tmp_path):
    tokenizer = tiny_pair.tokenizer
    padded = build_model(1, len(tokenizer) + 16, tokenizer)
    with torch.no_grad():  # make every padding row the most likely token
        padded.lm_head.weight[len(tokenizer) :] = padded.lm_head.weight[:1] * 1000
    padded.save_pretrained(tmp_path / "padded")
    tokenizer.save_pretrained(tmp_path / "padded")
    pair = load_pair(tiny_pair.ref_dir, tmp_path / "padded", precision="none")
    assert pair.vocab_size == len(tokenizer)
    ids = encode_prompt(pair.tokenizer, "Hello")
    for completion in generate(pair, ids, [0.0, 1.0, 3.0], SamplingConfig(max_new_tokens=8)):
        assert max(completion.token_ids) < len(tokenizer)


def other_tokenizer(eos="<|im_end|>"):
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|im_end|>", "<|endoftext|>", "<|im_start|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(reversed(CORPUS), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=eos, bos_token="<|im_start|>"
    )


def test_mismatched_tokenizers_fail_naming_both_models_and_the_difference(tiny_pair, tmp_path):
    tokenizer = other_tokenizer()
    build_model(1, len(tokenizer), tokenizer).save_pretrained(tmp_path / "foreign")
    tokenizer.save_pretrained(tmp_path / "foreign")
    with pytest.raises(ValueError, match=r"do not share a tokenizer.*token ids differ") as error:
        load_pair(tiny_pair.ref_dir, tmp_path / "foreign", precision="none")
    assert str(tiny_pair.ref_dir) in str(error.value)
    assert str(tmp_path / "foreign") in str(error.value)


def test_a_different_eos_token_is_a_mismatch():
    with pytest.raises(ValueError, match=re.escape("eos_token is '<|im_end|>' vs '<|endoftext|>'")):
        check_tokenizers(build_tokenizer(), build_tokenizer_with_eos("<|endoftext|>"), "a", "b")
    check_tokenizers(build_tokenizer(), build_tokenizer(), "a", "b")


def build_tokenizer_with_eos(eos):
    tokenizer = build_tokenizer()
    tokenizer.eos_token = eos
    return tokenizer


def test_a_missing_model_folder_is_named(tiny_pair, tmp_path):
    with pytest.raises(ValueError, match=r"no model directory at .*missing"):
        load_pair(tiny_pair.ref_dir, tmp_path / "missing", precision="none")


def test_an_unreachable_hub_model_says_it_needs_the_network(tiny_pair):
    with pytest.raises(ValueError, match="not available without network access"):
        load_pair("dera-demo-tests/no-such-model", tiny_pair.aligned_dir, precision="none")


def test_an_unknown_precision_is_refused(tiny_pair):
    with pytest.raises(ValueError, match="precision must be one of 4bit, 8bit, none, got '2bit'"):
        load_pair(tiny_pair.ref_dir, tiny_pair.aligned_dir, precision="2bit")


def test_adapter_pairs_share_one_base_by_default(tiny_pair):
    assert load_pair(tiny_pair.ref_dir, tiny_pair.adapter_dir, precision="none").shared_base
    assert not load_pair(tiny_pair.ref_dir, tiny_pair.aligned_dir, precision="none").shared_base


def test_shared_base_needs_an_adapter(tiny_pair):
    with pytest.raises(ValueError, match="shared_base needs a LoRA adapter"):
        load_pair(tiny_pair.ref_dir, tiny_pair.aligned_dir, precision="none", shared_base=True)


def test_thread_setting_is_applied_and_checked(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("DERA_NUM_THREADS", "2")
    configure_threads()
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("DERA_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="DERA_NUM_THREADS must be a positive integer, got 'zero'"):
        configure_threads()
    torch.set_num_threads(before)
