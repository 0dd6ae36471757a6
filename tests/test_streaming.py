import pytest

from dera_demo.streaming import TextStream

TEXTS = [
    "Emoji: 🙂 🚀 👍🏽 ❤️ 🎉 and more text after them.",
    "東京は日本の首都です。こんにちは、世界。",
    "Café, naïve, résumé, jalapeño.",
    "  leading spaces and\nnew lines\n\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_streamed_pieces_join_to_the_full_decode_for_multibyte_text(tiny_pair, text):
    tokenizer = tiny_pair.tokenizer
    ids = tokenizer.encode(text, add_special_tokens=False)
    stream = TextStream(tokenizer)
    pieces = [stream.push(i)[0] for i in ids] + [stream.flush()]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert all("\ufffd" not in piece for piece in pieces)
    # Byte-level BPE splits these characters across tokens, so some steps must hold text back.
    if any(ord(c) > 127 for c in text):
        assert len(ids) > len([p for p in pieces if p])


def push_text(stream, tokenizer, text):
    shown, stopped = "", False
    for token in tokenizer.encode(text, add_special_tokens=False):
        piece, stopped = stream.push(token)
        shown += piece
        if stopped:
            break
    return shown, stopped


def test_a_stop_string_ends_the_text_before_it(tiny_pair):
    stream = TextStream(tiny_pair.tokenizer, ["lazy"])
    shown, stopped = push_text(
        stream, tiny_pair.tokenizer, "The quick brown fox jumps over the lazy dog."
    )
    assert stopped
    assert shown == "The quick brown fox jumps over the "
    assert stream.text == shown


def test_text_that_may_begin_a_stop_string_is_held_back_until_it_cannot(tiny_pair):
    tokenizer = tiny_pair.tokenizer
    stream = TextStream(tokenizer, ["over the moon"])
    shown, stopped = push_text(stream, tokenizer, "The quick brown fox jumps over the")
    assert not stopped
    assert shown == "The quick brown fox jumps "
    shown += stream.flush()
    assert shown == "The quick brown fox jumps over the"


def test_a_special_token_is_never_shown(tiny_pair):
    tokenizer = tiny_pair.tokenizer
    stream = TextStream(tokenizer)
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    ids = [*tokenizer.encode("Hi", add_special_tokens=False), start]
    assert "".join(stream.push(i)[0] for i in ids) + stream.flush() == "Hi"
