"""Getting the candidate program out of a model's answer.

Models answer in many shapes: one fenced block, several (the program, then a snippet
explaining the change), prose around code, a fence cut off by the token limit,
reasoning wrapped in `<think>` tags, or bare code with no fence at all. The rule:

1. drop `<think>...</think>` reasoning;
2. if there are fenced blocks, consider those tagged rust/rs, or untagged ones when
   none is tagged; blocks in other languages (toml, sh, text...) never count. Take the
   longest (the full program rather than a one-line illustration); on a tie, the last;
3. otherwise, if the answer contains Rust items, take everything from the first line
   that starts one, dropping trailing prose after the last closing brace;
4. otherwise there is no code: return None (the agent records that as the reason).
"""

from __future__ import annotations

import re

__all__ = ["extract_code"]

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)
_FENCE = re.compile(r"^[ \t]*(```+|~~~+)[ \t]*([\w+#-]*)[^\n]*\n(.*?)(?:^[ \t]*\1[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)
_RUST_TAGS = {"rust", "rs"}
_ITEM_START = re.compile(
    r"^(?:#!?\[|//|use |pub(?:\(\w+\))? |fn |struct |enum |impl\b|trait |mod |const |static |type |macro_rules!)"
)


def extract_code(answer: str) -> str | None:
    text = _THINK.sub("", answer)
    blocks = [(tag.lower(), body) for _, tag, body in _FENCE.findall(text)]
    if blocks:
        rust = [body for tag, body in blocks if tag in _RUST_TAGS]
        candidates = rust or [body for tag, body in blocks if not tag]
        candidates = [c for c in candidates if c.strip()]
        if not candidates:
            return None
        longest = max(len(c) for c in candidates)
        chosen = [c for c in candidates if len(c) == longest][-1]
        return chosen.strip("\n") + "\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _ITEM_START.match(line)), None)
    if start is None:
        return None
    code = lines[start:]
    last_brace = max((i for i, line in enumerate(code) if line.rstrip().endswith("}")), default=len(code) - 1)
    return "\n".join(code[: last_brace + 1]).strip("\n") + "\n"
