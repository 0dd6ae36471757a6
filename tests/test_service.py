import pytest

from dera_demo.engine import SamplingConfig, generate
from dera_demo.prompts import encode_prompt
from dera_demo.service import CUSTOM_PAIR, MAX_PROMPT_CHARS, Backend

GREEDY = SamplingConfig(max_new_tokens=20, temperature=0.0)


@pytest.fixture()
def backend(tiny_pair, fp32_pair):
    backend = Backend(
        CUSTOM_PAIR, precision="none", custom=(str(tiny_pair.ref_dir), str(tiny_pair.aligned_dir))
    )
    backend._pair = fp32_pair  # reuse the session's loaded pair
    return backend


def test_a_run_streams_views_that_end_in_the_engines_text(backend, fp32_pair):
    views = list(backend.run("s", "Bake the bread", [0.0, 1.0], GREEDY, min_interval_s=0.0))
    assert len(views) > 2 and views[-1].done and not any(v.done for v in views[:-1])
    ids = encode_prompt(fp32_pair.tokenizer, "Bake the bread")
    expected = generate(fp32_pair, ids, [0.0, 1.0], GREEDY)
    assert [v.text for v in views[-1].sequences] == [c.text for c in expected]
    assert views[-1].first_token_s is not None and views[-1].tokens_per_s > 0
    assert not backend.is_running("s")


def test_updates_are_throttled(backend):
    views = list(backend.run("s", "Bake the bread", [1.0], GREEDY, min_interval_s=60.0))
    assert len(views) == 2  # the first step, then the final view


def test_moving_the_strength_during_a_run_steers_the_next_tokens(backend):
    run = backend.run("s", "Bake the bread", [0.0], GREEDY, min_interval_s=0.0)
    next(run)
    assert backend.is_running("s")
    assert backend.set_strength("s", 0, 2.0)
    final = list(run)[-1].sequences[0]
    assert final.strength == 2.0
    assert not backend.set_strength("s", 0, 1.0)  # nothing runs any more


def test_stop_ends_the_run_within_a_token(backend):
    run = backend.run("s", "Bake the bread", [0.0, 1.0], GREEDY, min_interval_s=0.0)
    first = next(run)
    tokens_then = [v.tokens for v in first.sequences]
    backend.stop("s")
    rest = list(run)
    assert rest[-1].done
    assert [v.tokens for v in rest[-1].sequences] <= [t + 1 for t in tokens_then]
    assert not backend.is_running("s")


def test_a_bad_strength_in_a_run_names_the_value(backend):
    with pytest.raises(ValueError, match="got 11"):
        next(backend.run("s", "hi", [11], GREEDY))
    with pytest.raises(ValueError, match="got 12"):
        run = backend.run("s", "hi", [1.0], GREEDY)
        next(run)
        backend.set_strength("s", 0, 12)


def test_an_overlong_prompt_is_refused_with_its_length_and_the_limit(backend):
    prompt = "a" * (MAX_PROMPT_CHARS + 1)
    with pytest.raises(ValueError, match=f"{MAX_PROMPT_CHARS + 1} characters; the limit is"):
        next(backend.run("s", prompt, [1.0], GREEDY))
    with pytest.raises(ValueError, match="tokens; the model's context holds 96"):
        next(backend.run("s", "word " * 200, [1.0], GREEDY))


def test_max_new_tokens_is_lowered_to_fit_the_context_with_a_warning(backend):
    config = SamplingConfig(max_new_tokens=500, temperature=0.0)
    final = list(backend.run("s", "Bake the bread", [3.0], config))[-1]
    assert "lowered from 500" in final.warning
    assert final.sequences[0].stop_reason in ("max_new_tokens", "eos")


def test_pairs_can_be_chosen_unless_locked(tiny_pair):
    backend = Backend()
    assert "zephyr-7b" in backend.pair_names() and CUSTOM_PAIR in backend.pair_names()
    assert "Zephyr" in backend.select("zephyr-7b")
    with pytest.raises(ValueError, match="needs both a reference and an aligned model"):
        backend.select(CUSTOM_PAIR, "x", "")
    with pytest.raises(ValueError, match="unknown pair 'nope'"):
        backend.select("nope")
    locked = Backend("olmo2-1b", locked=True)
    assert locked.pair_names() == ["olmo2-1b"]
    with pytest.raises(ValueError, match="locked to the pair 'olmo2-1b'"):
        locked.select("zephyr-7b")


def test_the_environment_locks_the_app_to_one_pair(monkeypatch, tiny_pair):
    monkeypatch.setenv("DERA_PAIR", CUSTOM_PAIR)
    monkeypatch.setenv("DERA_REF", str(tiny_pair.ref_dir))
    monkeypatch.setenv("DERA_ALIGNED", str(tiny_pair.aligned_dir))
    monkeypatch.setenv("DERA_PRECISION", "none")
    backend = Backend.from_env()
    assert backend.locked and backend.pair_names() == [CUSTOM_PAIR]
    assert backend.pair().vocab_size == len(tiny_pair.tokenizer)
    monkeypatch.setenv("DERA_PRECISION", "3bit")
    with pytest.raises(ValueError, match="DERA_PRECISION must be one of"):
        Backend.from_env()


def test_an_offline_hub_pair_fails_with_a_clear_message():
    backend = Backend()
    backend.select("zephyr-7b")
    with pytest.raises(ValueError, match="not available without network access"):
        next(backend.run("s", "hi", [1.0], GREEDY))


@pytest.mark.parametrize(("setting", "expected"), [("", True), ("0", False)])
def test_adapter_pairs_share_the_base_unless_told_not_to(monkeypatch, tiny_pair, setting, expected):
    monkeypatch.setenv("DERA_PAIR", CUSTOM_PAIR)
    monkeypatch.setenv("DERA_REF", str(tiny_pair.ref_dir))
    monkeypatch.setenv("DERA_PRECISION", "none")
    monkeypatch.setenv("DERA_SHARED_BASE", setting)
    monkeypatch.setenv("DERA_ALIGNED", str(tiny_pair.adapter_dir))
    assert Backend.from_env().pair().shared_base is expected
    monkeypatch.setenv("DERA_ALIGNED", str(tiny_pair.aligned_dir))
    assert Backend.from_env().pair().shared_base is False
