import math

import pytest
import torch

from dera_demo.realign import (
    check_strength,
    gumbel_noise,
    kl_to_ref,
    mix_logits,
    penalize_repeats,
    sample_tokens,
    top_k_filter,
    top_p_filter,
)


def test_mixed_logits_follow_the_formula_and_are_linear_in_strength():
    torch.manual_seed(0)
    ref, aligned = torch.randn(4, 11), torch.randn(4, 11)
    strengths = torch.tensor([0.0, 0.25, 1.0, 3.0])
    mixed = mix_logits(ref, aligned, strengths)
    expected = ref + strengths[:, None] * (aligned - ref)
    torch.testing.assert_close(mixed, expected)
    # Linear: the mix at 1.5 is halfway between the mixes at 1 and 2, past the aligned model.
    at = [mix_logits(ref, aligned, torch.full((4,), s)) for s in (1.0, 1.5, 2.0)]
    torch.testing.assert_close(at[1], (at[0] + at[2]) / 2)


def test_strength_zero_and_one_return_each_model_bit_for_bit():
    torch.manual_seed(1)
    ref, aligned = torch.randn(2, 1000) * 30, torch.randn(2, 1000) * 30
    mixed = mix_logits(ref, aligned, torch.tensor([0.0, 1.0]))
    assert torch.equal(mixed[0], ref[0])
    assert torch.equal(mixed[1], aligned[1])


def test_mixing_happens_in_fp32_for_half_precision_logits():
    ref = torch.randn(1, 8, dtype=torch.bfloat16)
    mixed = mix_logits(ref, ref.clone(), torch.tensor([0.5]))
    assert mixed.dtype == torch.float32


def test_a_token_ruled_out_by_either_model_stays_ruled_out():
    ref = torch.tensor([[0.0, -math.inf, 1.0]])
    aligned = torch.tensor([[-math.inf, 2.0, 1.0]])
    mixed = mix_logits(ref.expand(3, -1), aligned.expand(3, -1), torch.tensor([0.5, 1.0, 4.0]))
    assert torch.isneginf(mixed[:, :2]).all()
    assert torch.isfinite(mixed[:, 2]).all()


@pytest.mark.parametrize("bad", [-0.1, 10.5, math.nan, math.inf])
def test_out_of_range_strength_is_refused_with_its_value(bad):
    with pytest.raises(ValueError, match="strength must be"):
        check_strength(bad)


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, False, True]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(top_p_filter(probs.log(), 0.8)).tolist()
    assert kept == [[True, True, False, False]]
    kept = torch.isfinite(top_p_filter(probs.log(), 0.81)).tolist()
    assert kept == [[True, True, True, False]]
    assert torch.isfinite(top_p_filter(probs.log(), 0.1)).sum() == 1


def test_gumbel_max_draws_from_the_softmax():
    generator = torch.Generator().manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    draws = 20000
    counts = torch.zeros(4)
    for _ in range(draws):
        noise = gumbel_noise(generator, 4)
        token = sample_tokens(logits, temperature=1.0, top_k=0, top_p=1.0, noise=noise)
        counts[token] += 1
    torch.testing.assert_close(counts / draws, logits.softmax(-1)[0], atol=0.015, rtol=0)


def test_temperature_zero_is_greedy():
    logits = torch.tensor([[0.1, 3.0, 2.9], [5.0, 0.0, 0.0]])
    noise = torch.tensor([10.0, 0.0, 0.0])
    assert sample_tokens(logits, temperature=0.0, top_k=0, top_p=1.0, noise=noise).tolist() == [
        1,
        0,
    ]


def test_shared_noise_couples_rows_with_equal_logits():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 50).expand(5, -1)
    tokens = sample_tokens(
        logits, temperature=0.7, top_k=10, top_p=0.9, noise=gumbel_noise(generator, 50)
    )
    assert len(set(tokens.tolist())) == 1


def test_repetition_penalty_lowers_seen_tokens_only():
    logits = torch.tensor([[2.0, -2.0, 2.0]])
    seen = torch.tensor([[True, True, False]])
    out = penalize_repeats(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 2.0]]


def test_kl_is_zero_for_equal_distributions_and_matches_the_definition():
    p = torch.tensor([[0.7, 0.2, 0.1]]).log()
    q = torch.tensor([[0.2, 0.3, 0.5]]).log()
    assert kl_to_ref(p, p).abs().item() < 1e-6
    expected = (p.exp() * (p - q)).sum()
    torch.testing.assert_close(kl_to_ref(p, q)[0], expected)
