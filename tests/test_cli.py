import json

import pytest

from dera_demo.cli import main, strength_arg


def run(capsys, tiny_pair, *args):
    code = main(
        [
            "generate",
            "--ref",
            str(tiny_pair.ref_dir),
            "--aligned",
            str(tiny_pair.aligned_dir),
            "--precision",
            "none",
            "--max-new-tokens",
            "6",
            *args,
        ]
    )
    return code, capsys.readouterr()


def test_json_prints_one_object_per_strength(capsys, tiny_pair):
    code, out = run(capsys, tiny_pair, "--prompt", "Hello", "--strength", "0", "2/3", "3", "--json")
    assert code == 0
    records = [json.loads(line) for line in out.out.splitlines()]
    assert [r["strength"] for r in records] == pytest.approx([0.0, 2 / 3, 3.0])
    for record in records:
        assert {"strength", "text", "token_ids", "stop_reason"} <= record.keys()
        assert 1 <= len(record["token_ids"]) <= 6
        assert record["stop_reason"] in ("eos", "max_new_tokens")
    assert "tokens/s" in out.err


def test_several_strengths_print_headed_outputs(capsys, tiny_pair):
    code, out = run(
        capsys, tiny_pair, "--prompt", "Hello", "--strength", "0", "1", "--temperature", "0"
    )
    assert code == 0
    assert "=== strength 0 (" in out.out and "=== strength 1 (" in out.out


def test_one_strength_streams_plain_text(capsys, tiny_pair):
    code, out = run(capsys, tiny_pair, "--prompt", "Hello", "--temperature", "0", "--raw")
    assert code == 0
    assert "===" not in out.out and out.out.endswith("\n")
    assert "tokens/s" not in out.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "  "], "prompt must be non-empty text"),
        (["--prompt", "hi", "--strength", "11"], "strength must be a finite number from 0 to 10"),
        (["--prompt", "hi", "--temperature", "-1"], "temperature must be from 0"),
        (["--prompt", "hi", "--top-p", "0"], "top_p must be in (0, 1]"),
        (["--prompt", "hi", "--top-k", "-3"], "top_k must be at least 0"),
        (["--prompt", "hi", "--pair", "olmo2-1b"], "--pair olmo2-1b is unused"),
    ],
)
def test_bad_input_exits_cleanly_with_a_message(capsys, tiny_pair, args, message):
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, tiny_pair, *args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_model_exits_with_its_path(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(
            [
                "generate",
                "--ref",
                str(tmp_path / "nope"),
                "--aligned",
                str(tmp_path),
                "--prompt",
                "x",
            ]
        )
    assert "no model directory at" in capsys.readouterr().err


def test_strengths_accept_fractions():
    assert strength_arg("1/6") == pytest.approx(1 / 6)
    assert strength_arg("0.5") == 0.5
    with pytest.raises(Exception, match="fraction like 2/3"):
        strength_arg("half")


def test_two_copies_of_an_adapter_pair_give_the_same_output(capsys, tiny_pair):
    args = [
        "generate",
        "--ref",
        str(tiny_pair.ref_dir),
        "--aligned",
        str(tiny_pair.adapter_dir),
        "--precision",
        "none",
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0",
        "--strength",
        "0",
        "1",
        "--json",
    ]

    def tokens_and_texts():
        return [
            (r["token_ids"], r["text"])
            for r in map(json.loads, capsys.readouterr().out.split("\n")[:-1])
        ]

    assert main(args) == 0
    shared = tokens_and_texts()
    assert main([*args, "--two-copies"]) == 0
    assert tokens_and_texts() == shared


def test_aligned_alone_keeps_the_default_pairs_reference(capsys, tiny_pair, monkeypatch):
    # The preset's aligned side does not exist, so the run succeeds only if --aligned replaced it
    # while the reference came from the preset.
    missing = tiny_pair.ref_dir.parent / "no-such-aligned-model"
    monkeypatch.setattr("dera_demo.cli.resolve", lambda name: (tiny_pair.ref_dir, missing))
    code = main(
        [
            "generate",
            "--aligned",
            str(tiny_pair.adapter_dir),
            "--precision",
            "none",
            "--prompt",
            "Hi",
            "--max-new-tokens",
            "3",
            "--strength",
            "1",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.strip()
