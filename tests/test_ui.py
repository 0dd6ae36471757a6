import time

import pytest
from gradio_client import Client

from dera_demo.service import CUSTOM_PAIR, Backend, RunView, SequenceView
from dera_demo.ui import build_app

FAKE_WORDS = ["Hello", " there", ",", " friend", "!"]


class FakeBackend(Backend):
    """Streams canned words with no model at all."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s

    def pair(self):
        raise AssertionError("the UI must not load weights")

    def run(self, session_id, prompt, strengths, config, *, system=None, min_interval_s=0.0):
        if not prompt.strip():
            raise ValueError(f"prompt must be non-empty text, got {prompt!r}")
        views = [SequenceView(strength=float(s)) for s in strengths]
        for i, word in enumerate(FAKE_WORDS):
            time.sleep(self.delay_s)
            for view in views:
                view.text += word
                view.pieces.append((word, 0.5 - i * 0.25))
                view.tokens += 1
            yield RunView(views, first_token_s=0.01, tokens_per_s=100.0)
        for view in views:
            view.stop_reason = "eos"
        yield RunView(views, first_token_s=0.01, tokens_per_s=100.0, done=True)


def serve(backend, queue_size=8):
    demo = build_app(backend)
    demo.queue(default_concurrency_limit=1, max_size=queue_size)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_port=None)
    return demo, Client(url, verbose=False)


@pytest.fixture()
def fake_app():
    demo, client = serve(FakeBackend())
    yield client
    demo.close()


def test_the_ui_builds_without_weights_and_has_every_control():
    demo = build_app(FakeBackend())
    ids = {c.get("props", {}).get("elem_id") for c in demo.config["components"]}
    assert {"prompt", "strength", "generate", "stop", "response", "tokens", "stats"} <= ids
    assert {"strengths", "compare", "compare-grid", "mode"} <= ids
    sliders = [c["props"] for c in demo.config["components"] if c["type"] == "slider"]
    strength = next(p for p in sliders if p.get("elem_id") == "strength")
    assert (strength["minimum"], strength["maximum"], strength["value"]) == (0.0, 3.0, 1.0)
    assert "0 = the SFT model" in strength["info"] and "1 = the aligned model" in strength["info"]
    assert all(p.get("label") and p.get("info") for p in sliders)


def test_the_api_has_named_streaming_endpoints(fake_app):
    endpoints = fake_app.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/generate", "/compare"} <= endpoints.keys()
    names = [p["parameter_name"] for p in endpoints["/generate"]["parameters"]]
    assert names[:2] == ["prompt", "strength"]
    streamed = list(fake_app.submit(prompt="hi", strength=0.5, api_name="/generate"))
    assert len(streamed) == len(FAKE_WORDS) + 1
    assert streamed[-1] == {
        "strength": 0.5,
        "text": "Hello there, friend!",
        "tokens": 5,
        "stop_reason": "eos",
        "done": True,
    }


def test_bad_values_get_an_error_naming_them_and_the_next_request_works(fake_app):
    with pytest.raises(Exception, match="top_p must be in"):
        fake_app.predict(prompt="hi", top_p=1.5, api_name="/generate")
    with pytest.raises(Exception, match="'abc' is not a number"):
        fake_app.predict(prompt="hi", strengths="0, abc", api_name="/compare")
    with pytest.raises(Exception, match="max_new_tokens must be from 1 to 1024, got 5000"):
        fake_app.predict(prompt="hi", max_new_tokens=5000, api_name="/generate")
    assert fake_app.predict(prompt="hi", api_name="/generate")["text"] == "Hello there, friend!"


def test_a_full_queue_tells_users_the_demo_is_busy():
    demo, client = serve(FakeBackend(delay_s=0.3), queue_size=1)
    try:
        jobs = [client.submit(prompt="hi", api_name="/generate") for _ in range(4)]
        errors = []
        for job in jobs:
            try:
                job.result(timeout=30)
            except Exception as error:
                errors.append(str(error))
        assert any("Queue is full" in e for e in errors)
        assert len(errors) < len(jobs)
    finally:
        demo.close()


def test_end_to_end_on_a_tiny_pair_streams_generate_and_compare(tiny_pair):
    backend = Backend(
        CUSTOM_PAIR, precision="none", custom=(str(tiny_pair.ref_dir), str(tiny_pair.aligned_dir))
    )
    demo, client = serve(backend)
    try:
        streamed = list(
            client.submit(
                prompt="Bake the bread",
                strength=0.5,
                temperature=0.0,
                max_new_tokens=40,
                api_name="/generate",
            )
        )
        assert len(streamed) >= 2 and streamed[-1]["done"] and streamed[-1]["tokens"] >= 1
        assert [s["text"] for s in streamed] == sorted((s["text"] for s in streamed), key=len)
        compared = list(
            client.submit(prompt="Bake the bread", strengths="0, 1/6, 3", api_name="/compare")
        )
        assert [r["strength"] for r in compared[-1]] == pytest.approx([0, 1 / 6, 3])
        with pytest.raises(Exception, match="strength must be a finite number from 0 to 10"):
            client.predict(prompt="Bake", strength=12.0, api_name="/generate")
        again = client.predict(prompt="Bake", strength=1.0, max_new_tokens=3, api_name="/generate")
        assert again["done"] and 1 <= again["tokens"] <= 3
    finally:
        demo.close()
