"""Loading koan files: every problem names the file, the field and what to do."""

import textwrap

import pytest

from pytest_sleepy.koans import CorpusError, KoanFileError, load_corpus, load_koan
from pytest_sleepy.verify.harness import hidden_test_names

VALID = textwrap.dedent(
    """
    id = "bc_900"
    family = "borrow_checker"
    pattern = "use_after_move"
    title = "A name is moved and then printed"
    edition = "2021"
    split = "eval"
    expect = ["E0382"]
    buggy = '''fn f() {}'''
    fixed = '''fn f() {}'''
    tests = '''
    #[test]
    fn works() { f() }
    '''
    """
)


def write(directory, name, text):
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def with_field(name, value):
    lines = [line for line in VALID.splitlines() if not line.startswith(f"{name} =")]
    return "\n".join(lines) + (f"\n{name} = {value}\n" if value is not None else "\n")


def test_valid_file_loads_into_a_koan(tmp_path):
    koan = load_koan(write(tmp_path, "k.toml", VALID))
    assert (koan.id, koan.family, koan.split, koan.expect) == ("bc_900", "borrow_checker", "eval", ("E0382",))
    assert koan.test_names == ("works",)


def test_toml_syntax_error_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "broken.toml", 'id = "x"\nfamily = \n')
    with pytest.raises(KoanFileError, match=r"broken\.toml: TOML syntax error: .*line 2"):
        load_koan(path)


def test_a_koan_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(VALID.replace("bc_900", "bc_9\xe9").encode("latin-1"))
    with pytest.raises(KoanFileError, match=r"latin1\.toml: is not UTF-8 \(byte \d+\); save the file as UTF-8"):
        load_koan(path)


def test_a_families_file_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "families.toml").write_bytes('extra = "caf\xe9"'.encode("latin-1"))
    with pytest.raises(CorpusError, match=r"families\.toml: is not UTF-8"):
        load_corpus(tmp_path)


def test_missing_tests_is_refused_with_advice(tmp_path):
    text = VALID.split("tests =")[0]
    with pytest.raises(KoanFileError, match=r"k\.toml: field 'tests': missing; every koan needs hidden #\[test\]"):
        load_koan(write(tmp_path, "k.toml", text))


def test_tests_without_a_test_function_are_refused(tmp_path):
    text = VALID.replace("#[test]", "")
    with pytest.raises(KoanFileError, match="field 'tests': contains no #\\[test\\] function"):
        load_koan(write(tmp_path, "k.toml", text))


def test_unknown_family_lists_the_known_ones(tmp_path):
    path = write(tmp_path, "k.toml", with_field("family", '"borrowing"'))
    with pytest.raises(KoanFileError, match="field 'family': unknown family 'borrowing'; known families: borrow_checker"):
        load_koan(path)


def test_families_toml_extends_the_known_families(tmp_path):
    write(tmp_path, "families.toml", 'async_rust = "futures and executors"\n')
    write(tmp_path, "async/k.toml", with_field("family", '"async_rust"'))
    assert load_corpus(tmp_path)[0].family == "async_rust"


def test_invalid_edition_names_the_valid_ones(tmp_path):
    path = write(tmp_path, "k.toml", with_field("edition", '"2020"'))
    with pytest.raises(KoanFileError, match="field 'edition': '2020' is not a Rust edition; use one of 2015, 2018, 2021, 2024"):
        load_koan(path)


@pytest.mark.parametrize("value, message", [
    ('["E382"]', "'E382' is not a rustc error code"),
    ("[]", "non-empty list"),
    ('"E0382"', "non-empty list"),
])
def test_malformed_expect_is_refused(tmp_path, value, message):
    with pytest.raises(KoanFileError, match=f"field 'expect': .*{message}"):
        load_koan(write(tmp_path, "k.toml", with_field("expect", value)))


def test_unknown_field_is_refused_to_catch_typos(tmp_path):
    with pytest.raises(KoanFileError, match="field 'hnit': unknown field"):
        load_koan(write(tmp_path, "k.toml", VALID + 'hnit = "x"\n'))


def test_wrong_split_is_refused(tmp_path):
    with pytest.raises(KoanFileError, match="field 'split': 'test' must be 'eval' or 'train'"):
        load_koan(write(tmp_path, "k.toml", with_field("split", '"test"')))


def test_duplicate_ids_name_both_files(tmp_path):
    write(tmp_path, "a/one.toml", VALID)
    write(tmp_path, "b/two.toml", VALID)
    with pytest.raises(CorpusError) as caught:
        load_corpus(tmp_path)
    message = str(caught.value)
    assert "two.toml: field 'id': duplicate id 'bc_900'" in message and "one.toml" in message


def test_corpus_errors_are_all_reported_together(tmp_path):
    write(tmp_path, "a.toml", with_field("edition", '"1999"'))
    write(tmp_path, "b.toml", with_field("family", '"nope"').replace("bc_900", "bc_901"))
    with pytest.raises(CorpusError) as caught:
        load_corpus(tmp_path)
    assert [e.field for e in caught.value.errors] == ["edition", "family"]


def test_dependency_must_be_a_path_crate(tmp_path):
    path = write(tmp_path, "k.toml", VALID + '\n[dependencies]\nserde = "1"\n')
    with pytest.raises(KoanFileError, match="field 'dependencies.serde': only path dependencies"):
        load_koan(path)


def test_dependency_directory_needs_a_cargo_manifest(tmp_path):
    path = write(tmp_path, "k.toml", VALID + '\n[dependencies]\ngeo = { path = "deps/geo" }\n')
    with pytest.raises(KoanFileError, match="field 'dependencies.geo': .*has no Cargo.toml"):
        load_koan(path)


def test_test_names_follow_test_attributes_past_other_attributes():
    source = "#[test]\n#[should_panic]\nfn panics() {}\nfn helper() {}\n#[test]\nfn plain() {}"
    assert hidden_test_names(source) == ("panics", "plain")


def test_alternatives_decoys_and_equivalent_mutants_load_and_round_trip(tmp_path):
    from pytest_sleepy.corpus.importers import koan_to_toml

    extra = ('\n[[alternatives]]\nwhy = "borrowed"\ncode = \'\'\'\nfn main() {}\n\'\'\'\n'
             '\n[[decoys]]\nwhy = "drops the data"\ncode = \'\'\'\nfn main() { }\n\'\'\'\n'
             '\n[equivalent_mutants]\n"relational:3:10:> -> >=" = "0 either way"\n')
    koan = load_koan(write(tmp_path, "k.toml", VALID + extra))
    assert [(p.why, p.code.strip()) for p in koan.alternatives] == [("borrowed", "fn main() {}")]
    assert [p.why for p in koan.decoys] == ["drops the data"]
    assert koan.equivalent_mutants == {"relational:3:10:> -> >=": "0 either way"}
    again = load_koan(write(tmp_path, "again.toml", koan_to_toml(koan)))
    assert (again.alternatives, again.decoys, again.equivalent_mutants) == (
        koan.alternatives, koan.decoys, koan.equivalent_mutants)


def test_an_alternative_without_code_names_the_entry(tmp_path):
    path = write(tmp_path, "k.toml", VALID + '\n[[alternatives]]\nwhy = "x"\n')
    with pytest.raises(KoanFileError, match=r"field 'alternatives\[0\]': needs exactly two keys: why"):
        load_koan(path)


def test_difficulty_is_read_when_given(tmp_path):
    koan = load_koan(write(tmp_path, "k.toml", with_field("difficulty", "3")))
    assert koan.difficulty == 3


@pytest.mark.parametrize("value", ["0", "4", '"hard"', "2.0", "true"])
def test_a_difficulty_outside_one_to_three_names_the_field(tmp_path, value):
    with pytest.raises(KoanFileError, match=r"field 'difficulty': .* must be 1 \(easy\), 2 or 3 \(hard\)"):
        load_koan(write(tmp_path, "k.toml", with_field("difficulty", value)))
