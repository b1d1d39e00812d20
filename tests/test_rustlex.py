import pytest

from pytest_sleepy.verify.rustlex import LexError, matching_bracket, tokenize


def texts(source):
    return [t.text for t in tokenize(source)]


def test_comments_are_dropped_including_nested_block_comments():
    assert texts("a // unsafe\n/* outer /* inner */ still comment */ b") == ["a", "b"]


def test_string_contents_are_one_token():
    tokens = tokenize('let s = "std::process::exit(0)";')
    assert [t.kind for t in tokens] == ["ident", "ident", "punct", "string", "punct"]


def test_raw_strings_with_hashes_end_at_the_matching_delimiter():
    assert texts('r#"a "quoted" b"# x') == ['r#"a "quoted" b"#', "x"]


def test_char_literals_and_lifetimes_are_told_apart():
    tokens = tokenize("fn f<'a>(x: &'a str) -> char { '\\'' }")
    kinds = {t.text: t.kind for t in tokens}
    assert kinds["'a"] == "lifetime"
    assert kinds["'\\''"] == "char"


def test_ranges_are_not_floats():
    assert texts("0..10") == ["0", "..", "10"]
    assert texts("1.5e3f64") == ["1.5e3f64"]


def test_method_call_on_integer_literal_is_not_a_float():
    assert texts("1.max(2)") == ["1", ".", "max", "(", "2", ")"]


def test_multi_character_operators_are_single_tokens():
    assert texts("a::b -> c ..= d") == ["a", "::", "b", "->", "c", "..=", "d"]


def test_lines_are_counted_across_multiline_tokens():
    tokens = tokenize('"one\ntwo"\nx')
    assert tokens[-1].line == 3


def test_unterminated_string_is_an_error():
    with pytest.raises(LexError, match="line 1"):
        tokenize('let s = "oops;')


def test_matching_bracket_skips_nested_brackets_of_every_kind():
    tokens = tokenize("fn f() { let v = [(1, '}')]; { v } } tail")
    opening = [t.text for t in tokens].index("{")
    assert tokens[matching_bracket(tokens, opening) + 1].text == "tail"


def test_matching_bracket_of_an_unclosed_bracket_is_none():
    assert matching_bracket(tokenize("fn f() { ("), 4) is None


def test_a_first_line_shebang_is_skipped_as_rustc_does():
    tokens = tokenize('#!r#"\nconst X: u8 = 1;\n// "#')
    assert [t.text for t in tokens][:3] == ["const", "X", ":"] and tokens[0].line == 2


def test_an_inner_attribute_on_the_first_line_is_not_a_shebang():
    assert [t.text for t in tokenize("#! [allow(dead_code)]\nfn f() {}")][:3] == ["#", "!", "["]
