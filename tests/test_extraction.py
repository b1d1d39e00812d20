"""Code extraction against answers shaped like real model output."""

import pytest

from pytest_sleepy.extraction import extract_code

PROGRAM = "use std::fmt;\n\nfn main() {\n    println!(\"hi\");\n}\n"

ANSWERS = {
    "one rust fence": (f"Here is the fix:\n\n```rust\n{PROGRAM}```\n", PROGRAM),
    "rs tag": (f"```rs\n{PROGRAM}```", PROGRAM),
    "untagged fence": (f"```\n{PROGRAM}```", PROGRAM),
    "tilde fence": (f"~~~rust\n{PROGRAM}~~~\n", PROGRAM),
    "program then a snippet": (
        f"The value is moved.\n```rust\n{PROGRAM}```\nThe key line is:\n```rust\nlet b = a.clone();\n```\n", PROGRAM),
    "snippet then program": (
        f"Change\n```rust\nlet b = a.clone();\n```\nFull code:\n```rust\n{PROGRAM}```", PROGRAM),
    "other languages ignored": (f"```toml\n[package]\nname = \"x\"\n```\n```rust\n{PROGRAM}```", PROGRAM),
    "shell only is no code": ("Run this:\n```sh\ncargo build\n```", None),
    "fence cut off by the token limit": (f"```rust\n{PROGRAM}", PROGRAM),
    "reasoning stripped": (f"<think>Maybe ```rust\nfn wrong() {{}}\n``` is long enough to win? no</think>\n```rust\n{PROGRAM}```", PROGRAM),
    "no fence, code only": (PROGRAM, PROGRAM),
    "no fence, prose around code": (f"Sure! The corrected program:\n\n{PROGRAM}\nThis compiles now.", PROGRAM),
    "attribute first": ("#[derive(Debug)]\nstruct S;\n", "#[derive(Debug)]\nstruct S;\n"),
    "only prose": ("I cannot fix this without more context.", None),
    "empty fence": ("```rust\n```", None),
}


@pytest.mark.parametrize("answer, expected", ANSWERS.values(), ids=ANSWERS.keys())
def test_extracts_the_program_from_the_answer(answer, expected):
    assert extract_code(answer) == expected
