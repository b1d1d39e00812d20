"""The `sleepy koans` commands, run in-process through `main` (and once as a real script)."""

import json
import shutil
import subprocess
import textwrap

import pytest

from conftest import BUGGY_SHOP, FIXED_SHOP, REPO_ROOT, SHOP_TESTS, make_koan
from pytest_sleepy.cli import main
from pytest_sleepy.corpus.importers import koan_to_toml
from pytest_sleepy.koans import load_corpus


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "koans"
    (root / "borrow_checker").mkdir(parents=True)
    (root / "borrow_checker" / "shop_001.toml").write_text(koan_to_toml(make_koan()))
    return root


def run(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_list_filters_by_split_and_family(capsys):
    status, out, _ = run(capsys, "koans", "list", "--koans", str(REPO_ROOT / "koans"), "--split", "eval", "--family",
                         "trait_bounds", "--suite", "eval-v1")
    assert status == 0
    assert "tb_001" in out and "bc_001" not in out and "tb_101" not in out
    assert "\n10 koans\n" in out


def test_show_prints_the_koan_including_hidden_tests(capsys, corpus):
    status, out, _ = run(capsys, "koans", "show", "shop_001", "--koans", str(corpus))
    assert status == 0
    assert "shop_001: A basket is moved and then counted" in out
    assert "--- tests ---" in out and "fn sums_prices()" in out


def test_check_json_reports_the_verdict_fields(capsys, corpus, tmp_path):
    candidate = tmp_path / "candidate.rs"
    candidate.write_text(BUGGY_SHOP)
    status, out, _ = run(capsys, "koans", "check", "shop_001", str(candidate), "--json",
                         "--koans", str(corpus), "--cache-dir", str(tmp_path / "cache"))
    verdict = json.loads(out)
    assert status == 1
    assert {k: verdict[k] for k in ("koan", "passed", "compiled", "error_codes", "tests_passed", "tests_failed", "timed_out", "reason")} == {
        "koan": "shop_001", "passed": False, "compiled": False, "error_codes": ["E0382"],
        "tests_passed": 0, "tests_failed": 0, "timed_out": False, "reason": "does not compile: E0382",
    }


def test_check_passes_the_fix_and_second_run_comes_from_the_cache(capsys, corpus, tmp_path):
    candidate = tmp_path / "candidate.rs"
    candidate.write_text(FIXED_SHOP)
    args = ["koans", "check", "shop_001", str(candidate), "--koans", str(corpus), "--cache-dir", str(tmp_path / "cache")]
    status, out, _ = run(capsys, *args)
    assert status == 0 and out.startswith("shop_001: PASSED") and "(cached)" not in out
    status, out, _ = run(capsys, *args)
    assert status == 0 and "(cached)" in out


def test_no_cache_leaves_no_cache_behind(capsys, corpus, tmp_path):
    candidate = tmp_path / "candidate.rs"
    candidate.write_text(FIXED_SHOP)
    run(capsys, "koans", "check", "shop_001", str(candidate), "--koans", str(corpus),
        "--cache-dir", str(tmp_path / "cache"), "--no-cache")
    assert not (tmp_path / "cache").exists()


def test_check_of_an_unknown_koan_is_a_usage_error(capsys, corpus, tmp_path):
    status, _, err = run(capsys, "koans", "check", "nope", str(tmp_path / "x.rs"), "--koans", str(corpus))
    assert status == 2
    assert "no koan with id 'nope'" in err and "sleepy koans list" in err


def test_unreadable_candidate_file_is_named(capsys, corpus, tmp_path):
    status, _, err = run(capsys, "koans", "check", "shop_001", str(tmp_path / "missing.rs"), "--koans", str(corpus))
    assert status == 2 and "cannot read the candidate file" in err and "missing.rs" in err


def test_a_candidate_file_that_is_not_utf8_is_named(capsys, corpus, tmp_path):
    candidate = tmp_path / "latin1.rs"
    candidate.write_bytes("// caf\xe9\npub fn f() {}".encode("latin-1"))
    status, _, err = run(capsys, "koans", "check", "shop_001", str(candidate), "--koans", str(corpus))
    assert status == 2 and "latin1.rs is not UTF-8 (byte 6); save it as UTF-8" in err


def test_bad_koan_file_is_reported_with_file_and_field(capsys, corpus):
    (corpus / "borrow_checker" / "bad.toml").write_text(koan_to_toml(make_koan(id="bad_001")).replace('"2021"', '"2020"'))
    status, _, err = run(capsys, "koans", "list", "--koans", str(corpus))
    assert status == 2
    assert "bad.toml: field 'edition': '2020' is not a Rust edition" in err


def test_validate_passes_a_good_corpus(capsys, corpus, tmp_path):
    status, out, _ = run(capsys, "koans", "validate", "--koans", str(corpus), "--cache-dir", str(tmp_path / "c"))
    assert status == 0
    assert "1 koans (1 train; 1 patterns): 1 ok, 0 bad" in out


def test_validate_fails_a_koan_whose_tests_do_not_catch_a_stub(capsys, corpus, tmp_path):
    # This test compiles only if `total` exists, but never checks what it computes.
    weak = make_koan(id="weak_001", tests="#[test]\nfn exists() { let _f: fn(Vec<u32>) -> u32 = total; }")
    (corpus / "borrow_checker" / "weak_001.toml").write_text(koan_to_toml(weak))
    status, out, _ = run(capsys, "koans", "validate", "--koans", str(corpus), "--cache-dir", str(tmp_path / "c"))
    assert status == 1
    assert "the hidden tests still pass when `total` is stubbed with todo!(): they do not check behaviour" in out
    assert "2 koans (2 train; 1 patterns): 1 ok, 1 bad" in out


def test_validate_reports_wrong_expected_codes(capsys, corpus, tmp_path):
    (corpus / "borrow_checker" / "shop_001.toml").write_text(koan_to_toml(make_koan(expect=("E0502",))))
    status, out, _ = run(capsys, "koans", "validate", "--koans", str(corpus), "--cache-dir", str(tmp_path / "c"))
    assert status == 1
    assert "buggy fails with ['E0382'], but expect = ['E0502']" in out


def test_missing_bubblewrap_is_refused_unless_explicitly_unsafe(capsys, corpus, tmp_path, monkeypatch, toolchain):
    candidate = tmp_path / "candidate.rs"
    candidate.write_text(FIXED_SHOP)
    no_bwrap = tmp_path / "bin"
    no_bwrap.mkdir()
    monkeypatch.setenv("PATH", str(no_bwrap))
    args = ["koans", "check", "shop_001", str(candidate), "--koans", str(corpus), "--no-cache"]
    status, _, err = run(capsys, *args)
    assert status == 2
    assert "bubblewrap (bwrap) is not installed" in err and "--unsafe-no-sandbox (the sleepy command)" in err
    status, out, _ = run(capsys, *args, "--unsafe-no-sandbox")
    assert status == 0 and out.startswith("shop_001: PASSED")


def test_import_seed_json_measures_codes_and_flags_koans_without_tests(capsys, tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps([
        {"id": "BC-7", "family": "borrow_checker", "description": "Moved basket\nmore text",
         "buggy_code": BUGGY_SHOP, "correct_code": FIXED_SHOP,
         "tests": "#[cfg(test)]\nmod tests {\n    use super::*;\n" + textwrap.indent(SHOP_TESTS, "    ") + "}\n"},
        {"id": "bc_8", "family": "borrow_checker", "description": "No tests here",
         "buggy_code": BUGGY_SHOP, "correct_code": FIXED_SHOP, "expected_error": "E0382"},
    ]))
    out_dir = tmp_path / "imported"
    status, out, err = run(capsys, "koans", "import", "--format", "seed-json", str(seed), "--out", str(out_dir), "--no-cache")
    assert status == 0 and "wrote 2 koan file(s)" in out
    assert "bc_8: no tests in the seed; imported and flagged" in err
    koans = {k.id: k for k in load_corpus(out_dir)}
    assert koans["bc_7"].expect == ("E0382",) and koans["bc_7"].test_names == ("sums_prices", "empty_basket_costs_nothing")
    assert koans["bc_7"].title == "Moved basket" and koans["bc_8"].flagged
    status, out, _ = run(capsys, "koans", "validate", "--koans", str(out_dir), "--no-cache")
    assert status == 1 and "bc_8" in out and "flagged" in out


def test_import_rustlings_turns_exercises_into_koans(capsys, tmp_path):
    checkout = tmp_path / "rustlings"
    (checkout / "rustlings-macros").mkdir(parents=True)
    (checkout / "rustlings-macros" / "info.toml").write_text(
        'format_version = 1\n\n[[exercises]]\nname = "baskets1"\ndir = "03_baskets"\ntest = true\nhint = "Look at the move."\n'
    )
    module = "#[cfg(test)]\nmod tests {\n    use super::*;\n\n" + textwrap.indent(SHOP_TESTS, "    ") + "}\n"
    for folder, code in (("exercises", BUGGY_SHOP), ("solutions", FIXED_SHOP)):
        (checkout / folder / "03_baskets").mkdir(parents=True)
        (checkout / folder / "03_baskets" / "baskets1.rs").write_text(code + "\nfn main() {}\n\n" + module)
    out_dir = tmp_path / "imported"
    status, out, _ = run(capsys, "koans", "import", "--format", "rustlings", str(checkout), "--out", str(out_dir), "--no-cache")
    assert status == 0
    (koan,) = load_corpus(out_dir)
    assert (koan.id, koan.family, koan.split, koan.expect, koan.hint) == (
        "rl_baskets1", "rustlings_baskets", "train", ("E0382",), "Look at the move.")
    assert "mod tests" not in koan.buggy and koan.test_names == ("sums_prices", "empty_basket_costs_nothing")
    status, out, _ = run(capsys, "koans", "validate", "--koans", str(out_dir), "--no-cache")
    assert status == 0, out


def test_console_script_is_installed():
    sleepy = shutil.which("sleepy")
    assert sleepy, "the `sleepy` console script is not on PATH: install the package with pip"
    result = subprocess.run([sleepy, "koans", "list", "--koans", str(REPO_ROOT / "koans"), "--suite", "eval-v1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "\n30 koans\n" in result.stdout


def test_strategies_lists_names_with_their_descriptions(capsys):
    status, out, _ = run(capsys, "strategies", "--strategies", str(REPO_ROOT / "strategies"))
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["strategy", "steps", "description"]
    assert lines[2].startswith("baseline") and "plain instruction" in lines[2]
    assert lines[3].startswith("hints") and "train koans" in lines[3]


def test_strategies_with_a_missing_folder_is_a_usage_error(capsys, tmp_path):
    status, _, err = run(capsys, "strategies", "--strategies", str(tmp_path / "none"))
    assert status == 2 and "--strategies" in err and "does not exist" in err


def test_cache_rekey_moves_recorded_answers_to_todays_keys_and_says_how_many(capsys, tmp_path):
    from pytest_sleepy.models import Completion, CompletionCache, CompletionRequest, Message, cached_complete, load_model

    request = CompletionRequest((Message("user", "fix it"),))
    stale = tmp_path / "completions" / "ab" / f"ab{'0' * 62}.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"model": "ollama:q", "identity": "q@1", "request": request.to_dict(),
                                 "completion": Completion(text="recorded").to_dict()}))
    code, out, _ = run(capsys, "cache", "rekey", str(tmp_path))
    assert code == 0 and "1 answers moved to today's keys, 0 already there" in out
    replayed = cached_complete(load_model("ollama:q"), request, CompletionCache(tmp_path / "completions", "read"))
    assert replayed.text == "recorded"


def test_cache_rekey_of_a_folder_without_answers_says_which_folder_to_name(capsys, tmp_path):
    code, _, err = run(capsys, "cache", "rekey", str(tmp_path))
    assert code == 2 and "no recorded answers there; name the folder --sleepy-cache-dir names" in err
