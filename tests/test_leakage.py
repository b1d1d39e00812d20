"""The leakage guard: training data never contains an eval koan, even disguised, while
train koans (different programs with the same patterns) always pass."""

import difflib
import itertools

import pytest

from conftest import REPO_ROOT
from pytest_sleepy.koans import load_corpus
from pytest_sleepy.verify.rustlex import tokenize
from pytest_sleepy.training.leakage import (
    KEYWORDS,
    STD_NAMES,
    LeakageError,
    LeakageGuard,
    Overlap,
    audit,
    longest_run,
    normalized_tokens,
    record_code,
    render_audit,
)

CORPUS = load_corpus(REPO_ROOT / "koans")
EVAL = [k for k in CORPUS if k.split == "eval"]
TRAIN = [k for k in CORPUS if k.split == "train"]
FIELDS = ("buggy", "fixed", "tests")

UNRELATED_BEFORE = """
fn root_mean_square(values: &[f64]) -> f64 {
    let mut acc = 0.0;
    for v in values {
        acc += v * v;
    }
    (acc / values.len() as f64).sqrt()
}
"""
UNRELATED_AFTER = """
struct Pair {
    left: u8,
    right: u8,
}

impl Pair {
    fn sum(&self) -> u16 {
        self.left as u16 + self.right as u16
    }
}
"""


@pytest.fixture(scope="module")
def guard() -> LeakageGuard:
    return LeakageGuard(EVAL)


def rename_identifiers(code: str) -> str:
    """Every identifier that is not a keyword or a kept std name gets a fresh name,
    consistently (the same old name always becomes the same new one)."""
    names: dict[str, str] = {}
    out, last = [], 0
    for token in tokenize(code):
        if token.kind == "ident" and token.text not in KEYWORDS and token.text not in STD_NAMES:
            out += [code[last : token.start], names.setdefault(token.text, f"renamed_{len(names)}")]
            last = token.end
    return "".join(out) + code[last:]


def change_literals(code: str) -> str:
    replacement = {"number": "7", "string": '"something else"', "char": "'x'"}
    out, last = [], 0
    for token in tokenize(code):
        if token.kind in replacement:
            out += [code[last : token.start], replacement[token.kind]]
            last = token.end
    return "".join(out) + code[last:]


def fenced(code: str) -> str:
    return f"Here is the corrected program:\n\n```rust\n{code.strip()}\n```\n\nThe borrow now ends in time."


# --- normalization ------------------------------------------------------------------------


def test_normalization_abstracts_identifiers_literals_and_lifetimes_and_keeps_keywords_std_names_and_punctuation():
    code = "fn longest<'a>(xs: &'a [String], n: usize) -> Option<&'a str> { println!(\"{}\", 'c'); xs.get(n + 1) }"
    assert normalized_tokens(code) == (
        "fn", "ID", "<", "LT", ">", "(", "ID", ":", "&", "LT", "[", "String", "]", ",", "ID", ":", "usize", ")",
        "->", "Option", "<", "&", "LT", "str", ">", "{", "println", "!", "(", "STR", ",", "CHAR", ")", ";",
        "ID", ".", "ID", "(", "ID", "+", "NUM", ")", "}",
    )


def test_normalization_ignores_comments_layout_and_names():
    a = "fn total(items: &[u32]) -> u32 { items.iter().sum() }"
    b = "// sums them\nfn   add_up(\n    prices: &[u32] /* all */\n) -> u32 {\n    prices.iter().sum()\n}\n"
    assert normalized_tokens(a) == normalized_tokens(b)


def test_code_that_does_not_lex_keeps_its_lexable_lines_and_splits_the_rest_on_whitespace():
    code = 'fn main() {\n    let n = 3;\n    println!("cut off here\n'
    assert normalized_tokens(code) == (
        "fn", "ID", "(", ")", "{", "let", "ID", "=", "NUM", ";", 'println!("cut', "off", "here",
    )
    assert normalized_tokens('let s = "oops') == ("let", "s", "=", '"oops')


def test_longest_run_is_what_difflib_finds():
    codes = [normalized_tokens(getattr(k, f)) for k in CORPUS[::7] for f in FIELDS]
    codes += [(), ("ID",), ("ID", "(", ")"), ("a", "b", "c")]
    for a, b in itertools.product(codes, repeat=2):
        expected = difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size
        assert longest_run(a, b) == expected


# --- disguised eval koans are refused -------------------------------------------------------


def test_an_eval_koans_own_code_is_refused_with_a_message_naming_both(guard):
    koan = EVAL[0]
    with pytest.raises(LeakageError) as caught:
        guard.check(koan.fixed, label="sft record 12")
    message = str(caught.value)
    assert "sft record 12" in message and f"eval koan {koan.id}" in message
    assert "similarity 1.00" in message and "longest shared run" in message
    assert "train" in message  # says what to do
    assert caught.value.overlap.eval_koan == koan.id and caught.value.overlap.similarity == 1.0
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("kind", ["alternatives", "decoys"])
def test_an_eval_koans_alternatives_and_decoys_are_refused_like_its_own_code(kind):
    from dataclasses import replace

    from pytest_sleepy.koans import KoanProgram

    program = KoanProgram("another style", EVAL[0].fixed.replace("fn ", "pub fn "))
    koan = replace(EVAL[0], fixed="fn main() {}\n" * 40, buggy="fn main() {}\n" * 40, **{kind: (program,)})
    with pytest.raises(LeakageError) as caught:
        LeakageGuard([koan]).check(program.code, label="sft record 3")
    assert caught.value.overlap.eval_field == f"{kind}[0]"


@pytest.mark.parametrize("koan", EVAL, ids=lambda k: k.id)
def test_an_eval_koan_with_every_identifier_renamed_is_refused(guard, koan):
    for name in FIELDS:
        disguised = rename_identifiers(getattr(koan, name))
        assert disguised != getattr(koan, name)
        overlap = guard.worst(disguised)
        assert (overlap.eval_koan, overlap.similarity) == (koan.id, 1.0)
        with pytest.raises(LeakageError, match=koan.id):
            guard.check(disguised, label=f"renamed {koan.id}.{name}")


@pytest.mark.parametrize("koan", EVAL, ids=lambda k: k.id)
def test_an_eval_koan_with_its_literals_changed_is_refused(guard, koan):
    for name in FIELDS:
        with pytest.raises(LeakageError, match=koan.id):
            guard.check(change_literals(getattr(koan, name)), label=f"new literals {koan.id}.{name}")


@pytest.mark.parametrize("koan", EVAL, ids=lambda k: k.id)
def test_an_eval_koan_padded_with_an_unrelated_function_before_and_after_is_refused(guard, koan):
    for name in FIELDS:
        padded = UNRELATED_BEFORE + getattr(koan, name) + UNRELATED_AFTER
        with pytest.raises(LeakageError, match=koan.id) as caught:
            guard.check(padded, label=f"padded {koan.id}.{name}")
        assert caught.value.overlap.similarity == 1.0  # all of the eval code is in the candidate


def test_an_eval_koan_renamed_re_literaled_and_padded_at_once_is_refused(guard):
    for koan in EVAL:
        disguised = UNRELATED_BEFORE + change_literals(rename_identifiers(koan.buggy)) + UNRELATED_AFTER
        with pytest.raises(LeakageError, match=koan.id):
            guard.check(disguised, label="all disguises")


def drop_every_tenth_line(code: str) -> str:
    return "".join(line for number, line in enumerate(code.splitlines(keepends=True), 1) if number % 10)


@pytest.mark.parametrize("koan", EVAL, ids=lambda k: k.id)
def test_an_eval_koans_tests_with_every_tenth_line_dropped_are_refused(guard, koan):
    # Under the tests' similarity limit alone, 26 of the 200 passed.
    with pytest.raises(LeakageError, match=koan.id):
        guard.check(drop_every_tenth_line(koan.tests), label=f"edited {koan.id}.tests")


@pytest.mark.parametrize(("field", "similarity", "run", "refused"), [
    ("tests", 0.80, 60, True),
    ("tests", 0.80, 59, False),
    ("tests", 0.79, 119, False),
    ("buggy", 0.74, 119, False),
])
def test_against_eval_tests_a_high_similarity_with_a_long_run_is_refused(guard, field, similarity, run, refused):
    overlap = Overlap("bc_001", field, "candidate", similarity, run, 400, 400)
    assert guard.exceeds(overlap) is refused


def test_the_refusal_names_every_limit(guard):
    with pytest.raises(LeakageError) as caught:
        guard.check(drop_every_tenth_line(EVAL[0].tests), label="edited")
    limits = "similarity >= 0.75 (eval tests: 0.92, or 0.80 with a run >= 60 tokens) or a run >= 120 tokens"
    assert limits in str(caught.value)


def test_an_eval_koan_cut_off_inside_a_string_is_still_refused(guard):
    koan = EVAL[3]
    truncated = koan.fixed + '\nfn extra() {\n    println!("the answer ran out of tok'
    with pytest.raises(LeakageError, match=koan.id):
        guard.check(truncated, label="truncated answer")


# --- what must pass -------------------------------------------------------------------------


@pytest.mark.parametrize("koan", TRAIN, ids=lambda k: k.id)
def test_every_train_koan_passes_the_guard(guard, koan):
    """Pins the calibration: train koans share bug patterns and idioms with eval koans
    (and one's tests follow an eval koan's tests closely), yet are different programs."""
    record = {"kind": "variant", "id": koan.id, "code": {"buggy": koan.buggy, "fixed": koan.fixed, "tests": koan.tests}}
    for overlap in guard.check_record(record, label=f"train koan {koan.id}"):
        assert not guard.exceeds(overlap)
        assert overlap.longest_run < guard.max_run


def test_short_shared_boilerplate_does_not_trip_the_guard(guard):
    boilerplate = """
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub name: String,
    pub qty: u32,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} x{}", self.name, self.qty)
    }
}

fn main() {
    let item = Item { name: "pen".to_string(), qty: 2 };
    println!("{}", item);
}
"""
    overlap = guard.check(boilerplate, label="boilerplate")
    assert overlap.similarity < 0.5 and overlap.longest_run < 40


def test_the_worst_overlap_names_the_eval_field_and_both_lengths(guard):
    koan = EVAL[5]
    overlap = guard.worst(koan.tests)
    assert (overlap.eval_koan, overlap.eval_field) == (koan.id, "tests")
    assert overlap.eval_tokens == overlap.candidate_tokens == overlap.longest_run == len(normalized_tokens(koan.tests))


# --- records ---------------------------------------------------------------------------------


def test_check_record_checks_the_code_dict_and_both_preference_answers(guard):
    koan = TRAIN[0]
    record = {
        "kind": "dpo",
        "code": {"buggy": koan.buggy, "fixed": koan.fixed},
        "chosen": fenced(koan.fixed),
        "rejected": koan.buggy,  # no fence: the raw text is checked
    }
    assert [name for name, _ in record_code(record)] == ["code.buggy", "code.fixed", "chosen", "rejected"]
    assert record_code(record)[2][1].strip() == koan.fixed.strip()  # the code, not the prose
    overlaps = guard.check_record(record, label="record 0")
    assert [o.candidate_label for o in overlaps] == [
        "record 0 code.buggy", "record 0 code.fixed", "record 0 chosen", "record 0 rejected",
    ]


def test_a_record_whose_chosen_answer_leaks_an_eval_koan_is_refused(guard):
    train, leaked = TRAIN[0], EVAL[7]
    record = {
        "kind": "dpo",
        "code": {"chosen": "", "rejected": train.buggy},
        "chosen": fenced(rename_identifiers(leaked.fixed)),
        "rejected": fenced(train.buggy),
    }
    with pytest.raises(LeakageError) as caught:
        guard.check_record(record, label="dpo record 4")
    assert caught.value.overlap.candidate_label == "dpo record 4 chosen"
    assert caught.value.overlap.eval_koan == leaked.id


def test_check_record_reads_chat_messages_and_prompt_lists(guard):
    leaked = EVAL[2]
    user = {"role": "user", "content": f"This program does not compile:\n```rust\n{leaked.buggy}```\nFix it."}
    sft = {"kind": "sft", "messages": [{"role": "system", "content": "You fix Rust."}, user]}
    dpo = {"kind": "dpo", "prompt": [user], "chosen": "x", "rejected": "y"}
    for record in (sft, dpo):
        with pytest.raises(LeakageError, match=leaked.id):
            guard.check_record(record, label="chat")


# --- audit -----------------------------------------------------------------------------------


def _audit_records():
    patterns = sorted({k.pattern for k in EVAL})
    train = {k.pattern: k for k in TRAIN}
    records = [
        {"kind": "sft", "code": {"buggy": train[patterns[0]].buggy, "fixed": train[patterns[0]].fixed},
         "metadata": {"source_koan": train[patterns[0]].id, "variant": "v1", "pattern": patterns[0]}},
        {"kind": "sft", "code": {"fixed": train[patterns[0]].fixed},
         "metadata": {"source_koan": train[patterns[0]].id, "variant": "v2", "pattern": patterns[0]}},
        {"kind": "variant", "id": "v3", "pattern": patterns[1], "code": {"fixed": train[patterns[1]].fixed}},
        {"kind": "sft", "code": {"fixed": rename_identifiers(EVAL[0].fixed)},
         "metadata": {"source_koan": EVAL[0].id, "variant": None, "pattern": "some_train_only_pattern"}},
    ]
    return patterns, records


def test_audit_counts_records_per_eval_pattern_and_lists_uncovered_ones(guard):
    patterns, records = _audit_records()
    report = audit(records, guard, EVAL)
    assert list(report.coverage) == patterns
    assert report.coverage[patterns[0]] == 2 and report.coverage[patterns[1]] == 1
    assert report.uncovered == patterns[2:]
    assert report.records == 4 and len(report.overlaps) == 4
    assert report.over_threshold == 1
    assert report.leaks[0].candidate_label == f"#3 {EVAL[0].id} code.fixed"
    assert report.leaks[0].eval_koan == EVAL[0].id
    assert report.highest_similarity == 1.0 and report.longest_run == len(normalized_tokens(EVAL[0].fixed))
    assert [o.candidate_label.split(" ")[:2] for o in report.overlaps[:3]] == [
        ["#0", f"{records[0]['metadata']['source_koan']}/v1"], ["#1", f"{records[1]['metadata']['source_koan']}/v2"],
        ["#2", "v3"],
    ]


def test_audit_lists_records_without_code():
    report = audit([{"kind": "sft", "metadata": {"pattern": "x"}}], LeakageGuard(EVAL[:1]), EVAL[:1])
    assert report.without_code == ["#0"] and report.overlaps == [] and report.over_threshold == 0


def test_render_audit_as_text_gives_summary_worst_records_coverage_and_uncovered_patterns(guard):
    patterns, records = _audit_records()
    text = render_audit(audit(records, guard, EVAL), "text")
    summary, worst, coverage, uncovered = (text.index(h) for h in (
        "Leakage", "Worst overlaps", "Coverage of eval patterns", "Uncovered eval patterns"))
    assert summary < worst < coverage < uncovered
    assert "over threshold" in text and "LEAK" in text and EVAL[0].id in text
    assert all(p in text[coverage:] for p in patterns)
    assert f"- {patterns[-1]}" in text[uncovered:] and f"- {patterns[0]}\n" not in text[uncovered:]
    assert "|" not in text


def test_render_audit_as_markdown_uses_headings_and_pipe_tables(guard):
    _, records = _audit_records()
    markdown = render_audit(audit(records, guard, EVAL), fmt="markdown")
    assert "## Worst overlaps" in markdown and "## Uncovered eval patterns" in markdown
    assert "| eval pattern" in markdown and "|---" in markdown.replace(" ", "").replace(":", "")
    with pytest.raises(ValueError, match="markdown"):
        render_audit(audit(records, guard, EVAL), fmt="html")
