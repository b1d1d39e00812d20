"""The router: from a candidate's verdict (never its koan) to a koan pattern or the base model."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from conftest import FIXED_SHOP, REPO_ROOT, make_koan
from pytest_sleepy.verify.diagnostics import Diagnostic
from pytest_sleepy.corpus.suites import select_suite
from pytest_sleepy.koans import load_corpus
from pytest_sleepy.router import (THRESHOLD, ConfusionRow, Router, build_router, confusion, evaluate_router,
                                  features, render_confusion, template, words)
from pytest_sleepy.verify.verifier import VerificationCache, Verdict, Verifier

CORPUS = load_corpus(REPO_ROOT / "koans")
TRAIN = [k for k in CORPUS if k.split == "train"]
EVAL = [k for k in CORPUS if k.split == "eval"]
BY_ID = {k.id: k for k in CORPUS}

# Measured with rustc 1.95, trained on the 216 train koans (119 patterns): 13 of the 30
# eval-v1 koans (43.3 %) and 101 of the 200 draft eval-v2 koans (50.5 %) are routed to
# their declared pattern; 6 and 68 go to the base model. With 30 patterns eval-v1 was
# routed at 76.7 %: most new patterns share their error codes (E0277, E0308, E0599,
# E0502) with others, and the router then ties or stays below its threshold, which is
# the honest outcome. The floors leave room for a few koans to change when a new rustc
# rewords a message.
EVAL_V1_ACCURACY_FLOOR = 0.40
DRAFT_ACCURACY_FLOOR = 0.45


@pytest.fixture(scope="module")
def corpus_verifier(sandbox, tmp_path_factory):
    """The real sandboxed verifier with a private cache, shared by this module's tests
    so that each corpus program is compiled once."""
    return Verifier(sandbox, VerificationCache(tmp_path_factory.mktemp("router-cache")))


@pytest.fixture(scope="module")
def router(corpus_verifier) -> Router:
    return build_router(TRAIN, corpus_verifier)


def error(message: str, code: str | None = "E0277", notes: tuple[str, ...] = ()) -> Diagnostic:
    return Diagnostic(level="error", code=code, message=message, rendered=message, notes=notes)


def failed_compile(*diagnostics: Diagnostic) -> Verdict:
    codes = sorted({d.code or "<no code>" for d in diagnostics if d.is_error})
    return Verdict(passed=False, compiled=False, reason="does not compile", error_codes=codes,
                   diagnostics=list(diagnostics))


# -- the router sees verdicts only ------------------------------------------------------


def test_route_takes_a_verdict_and_nothing_else(router):
    assert list(inspect.signature(Router.route).parameters) == ["self", "verdict"]
    with pytest.raises(TypeError, match="Verdict"):
        router.route(BY_ID["bc_101"])  # a koan is refused, not inspected


def test_training_takes_verdicts_and_refuses_koans():
    with pytest.raises(TypeError, match="Verdict"):
        Router.train([(BY_ID["bc_101"], "use_after_move")])


def test_koans_with_identical_diagnostics_but_different_ids_route_identically(router, corpus_verifier, verifier):
    original = BY_ID["bc_101"]
    renamed = dataclasses.replace(original, id="zz_999", title="something else entirely", path=None)
    first = router.route(corpus_verifier.verify_candidate(original, original.buggy))
    second = router.route(verifier.verify_candidate(renamed, renamed.buggy))  # compiled afresh
    assert second == first
    assert first.pattern == "use_after_move"


def test_a_saved_router_names_no_koan():
    trained = Router.train([(failed_compile(error("borrow of moved value: `bc_101`", "E0382")), "use_after_move")])
    text = trained.to_json()
    assert "use_after_move" in text
    assert not [k.id for k in CORPUS if k.id in text]  # the span that held an id was abstracted


# -- features ---------------------------------------------------------------------------


def test_templates_replace_backticked_spans_paths_and_numbers():
    assert template("borrow of moved value: `name` at candidate.rs:13:36 after 2 moves") == (
        "borrow of moved value: <span> at <path> after <n> moves")


def test_a_message_saying_word_gives_the_whole_word_and_never_ord():
    found = features(failed_compile(error("expected a word, found a keyword", notes=("help: reorder the words",))))
    assert "msg:word" in found and "msg:keyword" in found and "note:words" in found
    assert not [f for f in found if f.split(":")[-1] in ("ord", "Ord")]


def test_std_names_are_whole_identifiers_inside_backticks():
    found = features(failed_compile(error("the trait bound `Version: PartialOrd` is not satisfied",
                                          notes=("help: consider annotating `Version` with `#[derive(Ord)]`",))))
    assert "std:PartialOrd" in found and "std:Ord" in found and "std:derive" in found
    only_partial = features(failed_compile(error("the trait bound `Version: PartialOrd` is not satisfied")))
    assert "std:Ord" not in only_partial
    assert not [f for f in found if "version" in f.lower()]  # the program's own names stay out


def test_warnings_do_not_count_and_a_failing_test_run_is_the_test_feature():
    warning = Diagnostic(level="warning", code="unused_variables", message="unused variable: `x`", rendered="")
    logic_bug = Verdict(passed=False, compiled=True, reason="hidden tests failed", diagnostics=[warning],
                        tests_failed=1, failed_tests=["sums_prices"])
    assert features(logic_bug) == ["test"]


# -- decisions ----------------------------------------------------------------------------


def test_unknown_error_codes_route_to_the_base_model(router, verifier):
    shop = make_koan()
    verdict = verifier.verify_candidate(shop, "pub fn total(items: Vec<u32>) -> u32 {\n"
                                              "    let _ = !String::new();\n    items.len() as u32\n}\n")
    assert verdict.error_codes == ["E0600"]  # no train koan fails with E0600
    decision = router.route(verdict)
    assert decision.pattern is None
    assert "never seen in training" in decision.reason


def test_a_passing_verdict_without_diagnostics_routes_to_the_base_model(router, verifier):
    verdict = verifier.verify_candidate(make_koan(), FIXED_SHOP)
    assert verdict.passed and not verdict.diagnostics
    decision = router.route(verdict)
    assert (decision.pattern, decision.features, decision.scores) == (None, [], [])


def test_a_shared_error_code_with_an_unfamiliar_message_is_below_the_threshold(router):
    decision = router.route(failed_compile(error("something rustc has never said before", "E0277")))
    assert decision.confidence < THRESHOLD
    assert decision.pattern is None and "below the threshold" in decision.reason


def test_an_error_code_owned_by_one_pattern_routes_even_with_an_unfamiliar_message(router):
    decision = router.route(failed_compile(error("something rustc has never said before", "E0506")))
    assert decision.confidence >= THRESHOLD
    assert decision.pattern == "assign_to_borrowed"  # the only train pattern that fails with E0506


def test_logic_bugs_tie_between_the_logic_patterns_and_route_to_the_base_model(router, corpus_verifier):
    koan = BY_ID["lg_101"]
    decision = router.route(corpus_verifier.verify_candidate(koan, koan.buggy))
    assert decision.features == ["test"]
    assert decision.pattern is None and decision.reason.startswith("tie between")


def test_a_decision_shows_the_top_three_scores_and_its_evidence(router, corpus_verifier):
    koan = BY_ID["rh_003"]
    decision = router.route(corpus_verifier.verify_candidate(koan, koan.buggy))
    assert decision.pattern is not None, decision.reason
    assert decision.pattern == decision.scores[0][0] and decision.confidence == decision.scores[0][1]
    assert len(decision.scores) == 3 and [s for _, s in decision.scores] == sorted((s for _, s in decision.scores),
                                                                                    reverse=True)
    assert decision.evidence and {f for f, _ in decision.evidence} <= set(decision.features)


# -- training and evaluation on the corpus -------------------------------------------------


def test_training_twice_gives_the_same_json_and_digest_whatever_the_order(router, corpus_verifier):
    again = build_router(list(reversed(TRAIN)), corpus_verifier)
    assert again.to_json() == router.to_json()
    assert again.digest() == router.digest()


def test_building_refuses_eval_koans_before_verifying_anything(tmp_path, sandbox):
    cache = tmp_path / "cache"
    verifier = Verifier(sandbox, VerificationCache(cache))
    with pytest.raises(ValueError, match="bc_001") as refused:
        build_router([BY_ID["bc_101"], BY_ID["bc_001"], BY_ID["rh_003"]], verifier)
    assert "rh_003" in str(refused.value) and "bc_101" not in str(refused.value)
    assert not cache.exists()


@pytest.mark.parametrize("suite, floor", [("eval-v1", EVAL_V1_ACCURACY_FLOOR), ("draft", DRAFT_ACCURACY_FLOOR)])
def test_trained_on_train_koans_it_routes_most_eval_koans_to_their_declared_pattern(router, corpus_verifier,
                                                                                    suite, floor):
    koans = select_suite(REPO_ROOT / "koans", CORPUS, suite).members(CORPUS)
    evaluation = evaluate_router(router, koans, corpus_verifier)
    print(f"\nrouter {router.digest()[:12]}: {suite} accuracy {evaluation.accuracy:.3f}")
    print(render_confusion(evaluation.table))
    assert evaluation.table.total == len(koans)
    assert evaluation.accuracy >= floor


def test_a_saved_router_loads_with_the_same_digest_and_decisions(router, corpus_verifier, tmp_path):
    path = router.save(tmp_path / "routers" / "router.json")
    loaded = Router.load(path)
    assert loaded.digest() == router.digest()
    assert path.read_text(encoding="utf-8") == router.to_json()
    for koan in EVAL[:10]:
        verdict = corpus_verifier.verify_candidate(koan, koan.buggy)
        assert loaded.route(verdict) == router.route(verdict)


def test_loading_refuses_a_router_of_another_version(router, tmp_path):
    data = json.loads(router.to_json())
    data["version"] = 0
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="retrain"):
        Router.load(path)


# -- the confusion table ----------------------------------------------------------------------


DECISIONS = [("map_err", "map_err"), ("map_err", "map_err"), ("missing_from_impl", "map_err"),
             ("off_by_one", None), ("use_after_move", "use_after_move")]


def test_confusion_counts_pairs_accuracy_and_unrouted():
    table = confusion(DECISIONS)
    assert table.rows == [ConfusionRow("map_err", "map_err", 2), ConfusionRow("missing_from_impl", "map_err", 1),
                          ConfusionRow("off_by_one", None, 1), ConfusionRow("use_after_move", "use_after_move", 1)]
    assert (table.total, table.correct, table.unrouted) == (5, 3, 1)
    assert table.accuracy == pytest.approx(0.6)
    assert table.unrouted_by_pattern == {"off_by_one": 1}
    assert table.confusions == [ConfusionRow("missing_from_impl", "map_err", 1)]


def test_confusion_renders_as_text_and_as_markdown():
    table = confusion(DECISIONS)
    text = render_confusion(table)
    assert text.splitlines()[0].split() == ["declared", "pattern", "routed", "pattern", "count", "correct"]
    assert "(unrouted: base model)" in text
    assert "3 of 5 (60.0%" in text and "unrouted (base model): 1" in text
    markdown = render_confusion(table, "markdown")
    assert markdown.startswith("| declared pattern") and "| missing_from_impl" in markdown
    with pytest.raises(ValueError):
        render_confusion(table, "html")


def test_words_are_lowercased_whole_tokens():
    assert words("Cannot borrow `x` as mutable, as it is not declared as mutable") == [
        "cannot", "borrow", "<span>", "as", "mutable", "as", "it", "is", "not", "declared", "as", "mutable"]
