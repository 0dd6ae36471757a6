"""Tests for the style reward and for a few IPO/DPO steps on a tiny random Llama."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from dera_demo import reward as reward_module
from dera_demo.embedded import ASSETS_DIR
from dera_demo.reward import reward, reward_breakdown
from dera_demo.train import build_pairs, load_prompts, train, trim_to_sentence

FLAT = (
    "Rinse the rice, then simmer one cup of rice in two cups of water for fifteen minutes. "
    "Let it rest covered for five minutes before fluffing it with a fork."
)
WARM = f"Great question! {FLAT}\n\nYou've got this, enjoy your dinner!"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_warm_concise_answer_beats_the_same_answer_flat() -> None:
    assert reward(WARM) > reward(FLAT) + 1.0


def test_repetition_loop_scores_below_a_fluent_answer() -> None:
    loop = "Rinse the rice and rinse the rice and " * 12
    assert reward(loop) < reward(FLAT) - 2.0
    assert reward_breakdown(loop)["repetition"] < -3.0


def test_exclamation_spam_does_not_pay() -> None:
    two = reward(FLAT + " Enjoy!!")
    assert reward(FLAT + " Enjoy" + "!" * 12) < two
    assert reward_breakdown(FLAT + "!" * 3)["exclamation"] == reward_module.EXCLAMATION_WEIGHT * 2


def test_long_and_empty_answers_are_penalized() -> None:
    words = " ".join(f"word{i}" for i in range(200))
    assert reward_breakdown(words)["length"] == pytest.approx(-0.02 * 80)
    assert reward("  ") == -reward_module.EMPTY_PENALTY


@pytest.mark.parametrize("text", [FLAT, WARM, "", "Yes! " * 30, "a b c a b c a b c"])
def test_reward_is_the_sum_of_its_breakdown(text: str) -> None:
    assert reward(text) == pytest.approx(sum(reward_breakdown(text).values()))


def test_trim_keeps_whole_sentences_within_the_word_limit() -> None:
    text = "First step. Second step is longer! Third one is cut mid"
    assert trim_to_sentence(text) == "First step. Second step is longer!"
    assert trim_to_sentence(text, max_words=3) == "First step."
    assert trim_to_sentence("1. Rinse the rice") == ""


def test_shipped_prompt_sets_are_large_and_disjoint() -> None:
    train_prompts = load_prompts(ASSETS_DIR / "prompts" / "train.jsonl")
    heldout = load_prompts(ASSETS_DIR / "prompts" / "heldout.jsonl")
    assert len(set(train_prompts)) >= 250 and len(set(heldout)) >= 40
    assert not set(train_prompts) & set(heldout)


def tiny_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=specials))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|im_end|>",
        chat_template=CHATML,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    prompts = ["How do I cook rice?", "Why is the sky blue?", "How can I save money?"] * 2
    answers = [FLAT, "Sunlight scatters off air. Blue scatters most.", "Make a budget. Track it."]
    pairs = build_pairs(prompts, answers * 2, seed=0)
    corpus = [m["content"] for p in pairs for m in p["prompt"] + p["chosen"] + p["rejected"]]
    tokenizer = tiny_tokenizer([*corpus, "user assistant system"])

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path_factory.mktemp("adapter")
    record = train(model, tokenizer, pairs, out, steps=3, learning_rate=5e-3, batch_size=2)
    base = LlamaForCausalLM(config)
    base.load_state_dict(base_state)
    return base.eval(), tokenizer, out, record, pairs


def test_training_writes_an_adapter_and_its_record(tiny_run: tuple) -> None:
    _, _, out, record, pairs = tiny_run
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    saved = json.loads((out / "training.json").read_text())
    assert saved["steps"] == 3 and saved["loss"] == "ipo" and saved["pairs"] == len(pairs)
    assert saved["theory_margin_per_token"] == pytest.approx(1 / (2 * record["beta"]))


def test_trained_adapter_loads_on_the_base_and_changes_its_logits(tiny_run: tuple) -> None:
    base, tokenizer, out, record, _ = tiny_run
    ids = tokenizer("<|im_start|>user How do I cook rice?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref_logits = base(input_ids=ids).logits
        aligned = PeftModel.from_pretrained(base, out).eval()
        aligned_logits = aligned(input_ids=ids).logits
    assert (aligned_logits - ref_logits).abs().max() > 1e-3
    assert record["final_margin"]["per_token"] != 0.0


def test_train_rejects_an_unknown_loss(tmp_path) -> None:
    with pytest.raises(ValueError, match="hinge"):
        train(None, None, [{}], tmp_path, loss="hinge")  # type: ignore[arg-type]


def test_pairs_put_the_warm_answer_on_the_chosen_side() -> None:
    pairs = build_pairs(["How do I cook rice?"], [FLAT + " And then"], seed=1)
    chosen, rejected = pairs[0]["chosen"][0]["content"], pairs[0]["rejected"][0]["content"]
    assert reward(chosen) > reward(rejected)
    assert rejected == FLAT and FLAT in chosen
    again = build_pairs(["How do I cook rice?"], [FLAT + " And then"], seed=1)
    assert again == pairs  # the opener and closer come from the seed


def test_looping_answers_make_no_pair() -> None:
    loop = "Rinse the rice. " * 20
    assert build_pairs(["How do I cook rice?"], [loop], seed=0) == []
