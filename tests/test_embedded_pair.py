"""The shipped pair: SmolLM2-135M-Instruct with our aligned adapter (slow: loads real weights)."""

import importlib.util
import json

import pytest

from dera_demo import embedded
from dera_demo.cli import HELDOUT
from dera_demo.engine import SamplingConfig, generate
from dera_demo.prompts import encode_prompt

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec(embedded.GGUF_PACKAGE) is None,
        reason=f"the embedded model's package is not installed ({embedded.INSTALL_HINT})",
    ),
]


@pytest.fixture(scope="module")
def pair():
    from dera_demo.models import load_pair
    from dera_demo.presets import resolve

    return load_pair(*resolve("smollm2-warm"), precision="none", shared_base=False)


def test_the_adapter_is_small_and_documented():
    weights = embedded.ADAPTER_DIR / "adapter_model.safetensors"
    assert weights.stat().st_size <= 5 * 2**20
    card = (embedded.ADAPTER_DIR / "MODEL_CARD.md").read_text()
    for topic in ("reward", "β", "seed", "Evaluation"):
        assert topic in card


def test_held_out_prompts_are_never_trained_on():
    train = {json.loads(line)["prompt"] for line in (HELDOUT.parent / "train.jsonl").open()}
    heldout = [json.loads(line)["prompt"] for line in HELDOUT.open()]
    assert len(heldout) >= 30 and not train & set(heldout)


def test_strength_one_differs_from_strength_zero_on_held_out_prompts(pair):
    config = SamplingConfig(max_new_tokens=24, temperature=0.0)
    prompts = [json.loads(line)["prompt"] for line in HELDOUT.open()][:4]
    differ = 0
    for prompt in prompts:
        at_zero, at_one = generate(pair, encode_prompt(pair.tokenizer, prompt), [0.0, 1.0], config)
        differ += at_zero.token_ids != at_one.token_ids
        assert at_one.text.strip()
    assert differ >= 3


def test_the_shared_base_path_matches_two_copies_token_for_token(pair):
    from dera_demo.models import load_pair
    from dera_demo.presets import resolve

    shared = load_pair(*resolve("smollm2-warm"), precision="none", shared_base=True)
    assert shared.shared_base and not pair.shared_base
    config = SamplingConfig(max_new_tokens=24, temperature=0.0)
    for prompt in [json.loads(line)["prompt"] for line in HELDOUT.open()][:3]:
        ids = encode_prompt(pair.tokenizer, prompt)
        strengths = [0.0, 0.5, 1.0, 2.0]
        expected = [c.token_ids for c in generate(pair, ids, strengths, config)]
        assert [c.token_ids for c in generate(shared, ids, strengths, config)] == expected
