import threading

import pytest
import torch

from dera_demo.engine import LiveStrengths, SamplingConfig, generate, stream
from dera_demo.models import load_pair
from dera_demo.prompts import encode_prompt
from dera_demo.realign import gumbel_noise, mix_logits, sample_tokens

GREEDY = SamplingConfig(max_new_tokens=24, temperature=0.0)
SAMPLED = SamplingConfig(max_new_tokens=24, temperature=1.0, top_k=20, top_p=0.9, seed=7)


def prompt_ids(pair, text="Bake the bread for forty minutes"):
    return encode_prompt(pair.tokenizer, text)


def own_generate(model, ids, max_new_tokens):
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, len(ids) :].tolist()


@pytest.mark.parametrize("precision", ["none", "4bit"])
def test_strength_zero_and_one_reproduce_each_models_own_greedy_generate(tiny_pair, precision):
    pair = load_pair(tiny_pair.ref_dir, tiny_pair.aligned_dir, precision=precision, device="cpu")
    ids = prompt_ids(pair)
    at_zero, at_one = generate(pair, ids, [0.0, 1.0], GREEDY)
    assert at_zero.token_ids == own_generate(pair.ref, ids, 24)
    assert at_one.token_ids == own_generate(pair.aligned, ids, 24)
    assert at_zero.token_ids != at_one.token_ids


@pytest.mark.parametrize("shared_base", [False, True])
def test_adapter_pair_reproduces_base_and_adapted_model(tiny_pair, shared_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    pair = load_pair(
        tiny_pair.ref_dir, tiny_pair.adapter_dir, precision="none", shared_base=shared_base
    )
    assert pair.shared_base is shared_base
    ids = prompt_ids(pair)
    at_zero, at_one = generate(pair, ids, [0.0, 1.0], GREEDY)
    base = AutoModelForCausalLM.from_pretrained(tiny_pair.ref_dir).eval()
    assert at_zero.token_ids == own_generate(base, ids, 24)
    adapted = PeftModel.from_pretrained(base, tiny_pair.adapter_dir).merge_and_unload().eval()
    assert at_one.token_ids == own_generate(adapted, ids, 24)


def naive_tokens(pair, ids, strength, config):
    """Both models rerun on the whole sequence every step, no cache, the formula spelled out."""
    generator = torch.Generator().manual_seed(config.seed)
    sequence, out = list(ids), []
    for _ in range(config.max_new_tokens):
        with torch.no_grad():
            full = torch.tensor([sequence])
            ref = pair.ref(full).logits[:, -1, : pair.vocab_size].float()
            aligned = pair.aligned(full).logits[:, -1, : pair.vocab_size].float()
        mixed = ref + strength * (aligned - ref)
        noise = gumbel_noise(generator, pair.vocab_size) if config.temperature else None
        token = sample_tokens(
            mixed,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            noise=noise,
        ).item()
        out.append(token)
        sequence.append(token)
        if token in pair.eos_token_ids:
            break
    return out


@pytest.mark.parametrize("config", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_cached_loop_matches_recomputing_everything(fp32_pair, config):
    ids = prompt_ids(fp32_pair)
    for strength in (0.4, 2.5):
        (fast,) = generate(fp32_pair, ids, [strength], config)
        assert fast.token_ids == naive_tokens(fp32_pair, ids, strength, config)


def test_batched_strengths_match_separate_calls_with_sampling(fp32_pair):
    ids = prompt_ids(fp32_pair)
    strengths = [0.0, 0.5, 1.0, 3.0]
    batched = generate(fp32_pair, ids, strengths, SAMPLED)
    for strength, together in zip(strengths, batched, strict=True):
        (alone,) = generate(fp32_pair, ids, [strength], SAMPLED)
        assert together.token_ids == alone.token_ids
        assert together.text == alone.text
    assert len({tuple(c.token_ids) for c in batched}) > 1


def test_coupled_sampling_gives_identical_text_for_identical_strengths(fp32_pair):
    first, second = generate(fp32_pair, prompt_ids(fp32_pair), [0.7, 0.7], SAMPLED)
    assert first.token_ids == second.token_ids


def test_sampling_is_reproducible_from_the_seed_and_changes_with_it(fp32_pair):
    ids = prompt_ids(fp32_pair)
    again = generate(fp32_pair, ids, [0.5], SAMPLED)[0].token_ids
    assert again == generate(fp32_pair, ids, [0.5], SAMPLED)[0].token_ids
    other = SamplingConfig(max_new_tokens=24, temperature=1.0, top_k=20, top_p=0.9, seed=8)
    assert again != generate(fp32_pair, ids, [0.5], other)[0].token_ids


def test_live_strength_change_takes_effect_at_the_next_token(fp32_pair):
    ids = prompt_ids(fp32_pair)
    live = LiveStrengths([0.0])
    tokens, strengths = [], []
    for step, (update,) in enumerate(stream(fp32_pair, ids, live, GREEDY)):
        tokens.append(update.token_id)
        strengths.append(update.strength)
        if step == 4:
            live.set(0, 1.0)
    assert strengths[:5] == [0.0] * 5 and strengths[5:] == [1.0] * (len(strengths) - 5)
    with torch.no_grad():
        aligned = fp32_pair.aligned(torch.tensor([ids + tokens[:5]])).logits[0, -1]
    assert tokens[5] == int(aligned[: fp32_pair.vocab_size].argmax())
    assert tokens[:5] == generate(fp32_pair, ids, [0.0], GREEDY)[0].token_ids[:5]


def test_live_strength_can_be_set_from_another_thread(fp32_pair):
    live = LiveStrengths([0.0, 0.0])
    worker = threading.Thread(target=live.set, args=(1, 2.0))
    worker.start()
    worker.join()
    updates = next(stream(fp32_pair, prompt_ids(fp32_pair), live, GREEDY))
    assert [u.strength for u in updates] == [0.0, 2.0]


def test_streamed_pieces_join_to_the_full_decode(fp32_pair):
    for completion in generate(fp32_pair, prompt_ids(fp32_pair), [0.0, 1.0, 2.0], SAMPLED):
        assert completion.text == fp32_pair.tokenizer.decode(
            completion.token_ids, skip_special_tokens=True
        )


def test_log_probs_are_each_models_own(fp32_pair):
    ids = prompt_ids(fp32_pair)
    (completion,) = generate(
        fp32_pair, ids, [0.5], SamplingConfig(max_new_tokens=3, temperature=0.0)
    )
    with torch.no_grad():
        ref = fp32_pair.ref(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
        aligned = fp32_pair.aligned(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
    first = completion.token_ids[0]
    assert completion.ref_log_probs[0] == pytest.approx(ref[first].item(), abs=1e-4)
    assert completion.aligned_log_probs[0] == pytest.approx(aligned[first].item(), abs=1e-4)
    mixed = mix_logits(ref[None], aligned[None], torch.tensor([0.5])).log_softmax(-1)[0]
    assert completion.log_probs[0] == pytest.approx(mixed[first].item(), abs=1e-4)
    assert completion.kls[0] > 0


def test_generation_stops_at_the_context_limit(fp32_pair):
    ids = prompt_ids(fp32_pair)
    config = SamplingConfig(max_new_tokens=500, temperature=0.0)
    (completion,) = generate(fp32_pair, ids, [3.0], config)
    assert completion.stop_reason == "context"
    assert len(ids) + len(completion.token_ids) == fp32_pair.context_length


def test_generation_reports_max_new_tokens(fp32_pair):
    (completion,) = generate(
        fp32_pair, prompt_ids(fp32_pair), [1.0], SamplingConfig(max_new_tokens=3)
    )
    assert len(completion.token_ids) <= 3
    assert completion.stop_reason in ("max_new_tokens", "eos")


def test_eos_ends_a_sequence_and_is_not_shown(fp32_pair):
    ids = prompt_ids(fp32_pair)
    eos = next(iter(fp32_pair.eos_token_ids))
    # Strength 10 on a pair whose only difference is a huge EOS logit makes EOS certain.
    ref_logits = torch.zeros(1, fp32_pair.vocab_size)
    aligned_logits = ref_logits.clone()
    aligned_logits[0, eos] = 50.0

    class FixedRunner:
        def prefill(self, input_ids):
            return ref_logits, aligned_logits

        def expand(self, n):
            raise AssertionError("one strength never expands")

        def decode(self, tokens):
            return ref_logits, aligned_logits

        def keep(self, rows):
            pass

    fake = type(fp32_pair)(**{**fp32_pair.__dict__})
    fake.runner = FixedRunner  # type: ignore[method-assign]
    (completion,) = generate(fake, ids, [1.0], GREEDY)
    assert completion.token_ids == [eos]
    assert completion.stop_reason == "eos"
    assert completion.text == ""


def test_closing_the_stream_stops_the_work(fp32_pair):
    calls = []
    real_runner = fp32_pair.runner

    def counting_runner():
        runner = real_runner()
        decode = runner.decode
        runner.decode = lambda tokens: calls.append(1) or decode(tokens)
        return runner

    fake = type(fp32_pair)(**{**fp32_pair.__dict__})
    fake.runner = counting_runner  # type: ignore[method-assign]
    steps = stream(fake, prompt_ids(fp32_pair), [0.0, 1.0], GREEDY)
    next(steps)
    next(steps)
    steps.close()
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.5}, "temperature must be from 0"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k must be at least 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be from 1 to 4096"),
        ({"max_new_tokens": 5000}, "got 5000"),
        ({"repetition_penalty": 0.5}, "repetition_penalty"),
        ({"stop_strings": ("",)}, "stop_strings"),
    ],
)
def test_bad_sampling_settings_are_refused_with_their_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)


@pytest.mark.parametrize("strengths", [[], [float("inf")], [-1.0], [10.01], [0.5] * 17])
def test_bad_strengths_are_refused(fp32_pair, strengths):
    with pytest.raises(ValueError):
        next(stream(fp32_pair, prompt_ids(fp32_pair), strengths, GREEDY))


def test_live_strength_rejects_bad_values_and_indices():
    live = LiveStrengths([0.0, 1.0])
    with pytest.raises(ValueError, match="got 12"):
        live.set(0, 12)
    with pytest.raises(IndexError, match="from 0 to 1, got 2"):
        live.set(2, 0.5)
    assert live.snapshot() == [0.0, 1.0]


def test_a_prompt_longer_than_the_context_is_refused_with_both_lengths(fp32_pair):
    too_long = [5] * fp32_pair.context_length
    with pytest.raises(ValueError, match=f"prompt is {fp32_pair.context_length} tokens.*holds 96"):
        next(stream(fp32_pair, too_long, [0.0], GREEDY))
    with pytest.raises(ValueError, match="empty prompt"):
        next(stream(fp32_pair, [], [0.0], GREEDY))


@pytest.mark.parametrize("precision", ["none", "4bit"])
def test_shared_base_gives_the_same_tokens_as_two_copies(tiny_pair, precision):
    two = load_pair(
        tiny_pair.ref_dir, tiny_pair.adapter_dir, precision=precision, shared_base=False
    )
    one = load_pair(tiny_pair.ref_dir, tiny_pair.adapter_dir, precision=precision, shared_base=True)
    ids = prompt_ids(two)
    strengths = [0.0, 0.5, 1.0, 2.0]
    expected = [c.token_ids for c in generate(two, ids, strengths, GREEDY)]
    assert [c.token_ids for c in generate(one, ids, strengths, GREEDY)] == expected
    assert len(set(map(tuple, expected))) > 1


def test_the_repetition_penalty_discourages_repeats_also_in_a_batch(fp32_pair):
    ids = prompt_ids(fp32_pair)
    plain = SamplingConfig(max_new_tokens=40, temperature=0.0)
    penalized = SamplingConfig(max_new_tokens=40, temperature=0.0, repetition_penalty=2.0)
    (loose,) = generate(fp32_pair, ids, [1.0], plain)
    (strict,) = generate(fp32_pair, ids, [1.0], penalized)
    assert len(set(strict.token_ids)) > len(set(loose.token_ids))
    batched = generate(fp32_pair, ids, [0.0, 1.0, 3.0], penalized)
    assert batched[1].token_ids == strict.token_ids
