"""Strategy files: discovery, errors, and the shipped `baseline` and `hints` strategies."""

from __future__ import annotations

import textwrap

import pytest

from pytest_sleepy.verify.diagnostics import Diagnostic
from pytest_sleepy.koans import load_corpus
from pytest_sleepy.strategies import StepView, StrategyError, load_strategies, select_strategies

from conftest import BUGGY_SHOP, REPO_ROOT, make_koan

STRATEGIES = REPO_ROOT / "strategies"


def write_strategy(folder, name, body):
    (folder / f"{name}.py").write_text(textwrap.dedent(body), encoding="utf-8")


def test_every_file_in_the_folder_is_a_strategy_named_after_it(tmp_path):
    write_strategy(tmp_path, "terse", """
        from pytest_sleepy.strategies import Strategy
        class Terse(Strategy):
            name = "terse"
            description = "a shorter prompt"
        STRATEGY = Terse()
    """)
    write_strategy(tmp_path, "_shared", "X = 1\n")  # helpers start with an underscore
    assert list(load_strategies(tmp_path)) == ["terse"]


def test_a_strategy_named_unlike_its_file_is_refused(tmp_path):
    write_strategy(tmp_path, "terse", """
        from pytest_sleepy.strategies import Strategy
        class Terse(Strategy):
            name = "short"
            description = "a shorter prompt"
        STRATEGY = Terse()
    """)
    with pytest.raises(StrategyError, match=r"terse.py: STRATEGY.name is 'short'; it must be the file's name, 'terse'"):
        load_strategies(tmp_path)


def test_a_file_without_STRATEGY_is_refused_with_what_to_write(tmp_path):
    write_strategy(tmp_path, "empty", "pass\n")
    with pytest.raises(StrategyError, match=r"empty.py: define STRATEGY = "):
        load_strategies(tmp_path)


def test_a_strategy_that_fails_to_import_names_its_file(tmp_path):
    write_strategy(tmp_path, "broken", "import does_not_exist\n")
    with pytest.raises(StrategyError, match=r"broken.py: cannot import the strategy: ModuleNotFoundError"):
        load_strategies(tmp_path)


def test_a_missing_folder_says_which_ini_option_points_at_it(tmp_path):
    with pytest.raises(StrategyError, match="sleepy_strategies"):
        load_strategies(tmp_path / "nowhere")


def test_an_unknown_strategy_name_lists_the_known_ones():
    known = load_strategies(STRATEGIES)
    with pytest.raises(StrategyError, match=r"unknown strategy 'share'; known: baseline, hints"):
        select_strategies(known, ["baseline", "share"])


def test_the_shipped_strategies_have_one_line_descriptions():
    for strategy in load_strategies(STRATEGIES).values():
        assert strategy.description and "\n" not in strategy.description


def test_the_strategy_definition_pins_its_source_by_hash():
    definition = load_strategies(STRATEGIES)["baseline"].definition()
    assert definition["source"] == "baseline.py" and len(definition["sha256"]) == 64


# -- hints -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hints_module():
    return load_strategies(STRATEGIES)["hints"]


def error(code, message, notes=()):
    return Diagnostic(level="error", code=code, message=message, rendered=message, notes=list(notes))


def hints_for(strategy, *diagnostics, tests_failed=False):
    module = __import__(type(strategy).__module__)
    return module.hints_for(list(diagnostics), tests_failed)


def test_hints_are_keyed_by_the_error_code(hints_module):
    hints = hints_for(hints_module, error("E0382", "borrow of moved value: `items`"))
    assert len(hints) == 1 and "moved" in hints[0]


def test_a_structured_match_comes_before_the_generic_hint_for_the_code(hints_module):
    hints = hints_for(hints_module, error("E0277", "`?` couldn't convert the error to `ConfigError`"))
    assert "From<SourceError>" in hints[0]
    assert "trait bound is not satisfied" in hints[1]


def test_a_question_mark_into_box_dyn_error_advises_implementing_error_not_from(hints_module):
    hints = hints_for(hints_module, error("E0277", "`?` couldn't convert the error: `JobError: std::error::Error` "
                                                   "is not satisfied"))
    assert "implement `std::fmt::Display`" in hints[0] and "`std::error::Error` for it" in hints[0]
    assert not any("From<SourceError>" in hint for hint in hints)


def test_an_unsized_trait_object_advises_a_pointer(hints_module):
    hints = hints_for(hints_module, error("E0277", "the size for values of type `dyn Shape` cannot be known at "
                                                   "compilation time"))
    assert "`Box<dyn Trait>`" in hints[0]


def test_message_text_without_the_code_triggers_nothing(hints_module):
    # The message matches the `?` rule, but the diagnostic is a different error.
    assert hints_for(hints_module, error("E0308", "`?` couldn't convert the error to `X`")) == [
        hints_for(hints_module, error("E0308", "mismatched types"))[0]]


def test_failing_tests_get_the_behaviour_hint(hints_module):
    hints = hints_for(hints_module, tests_failed=True)
    assert len(hints) == 1 and "boundary cases" in hints[0]


def test_warnings_never_select_hints(hints_module):
    warning = Diagnostic(level="warning", code="E0382", message="x", rendered="x")
    assert hints_for(hints_module, warning) == []


def test_hints_refuse_to_prepare_with_eval_koans(hints_module, verifier):
    with pytest.raises(ValueError, match="refusing examples from non-train koans: shop_001"):
        hints_module.prepare([make_koan(split="eval")], verifier.verify_candidate)


def test_hints_examples_come_from_train_koans_with_the_same_error(hints_module, verifier, shop_koan):
    corpus = load_corpus(REPO_ROOT / "koans")
    train = [k for k in corpus if k.split == "train"]
    hints_module.prepare(train, verifier.verify_candidate)
    verdict = verifier.verify_candidate(shop_koan, BUGGY_SHOP)
    messages = hints_module.messages(StepView(step=1, code=BUGGY_SHOP, verdict=verdict))
    examples = [m.content for m in messages if m.role == "assistant"]
    assert len(examples) == 2
    by_fix = {k.fixed.strip(): k for k in corpus}
    chosen = [by_fix[e.removeprefix("```rust\n").removesuffix("\n```")] for e in examples]
    assert all(k.split == "train" and "E0382" in k.expect for k in chosen)
    assert "Hints:" in messages[-1].content


def test_hints_choose_the_same_examples_every_time(hints_module, verifier, shop_koan):
    train = [k for k in load_corpus(REPO_ROOT / "koans") if k.split == "train"]
    hints_module.prepare(train, verifier.verify_candidate)
    verdict = verifier.verify_candidate(shop_koan, BUGGY_SHOP)
    view = StepView(step=1, code=BUGGY_SHOP, verdict=verdict)
    assert hints_module.messages(view) == hints_module.messages(view)


def test_hints_never_show_a_train_koan_its_own_fix(hints_module, verifier):
    train = [k for k in load_corpus(REPO_ROOT / "koans") if k.split == "train"]
    hints_module.prepare(train, verifier.verify_candidate)
    koan = next(k for k in train if k.id == "bc_101")
    verdict = verifier.verify_candidate(koan, koan.buggy)
    messages = hints_module.messages(StepView(step=1, code=koan.buggy, verdict=verdict, original=koan.buggy))
    assert all(koan.fixed.strip() not in m.content for m in messages)
    assert any(m.role == "assistant" for m in messages)  # other train koans still serve as examples
