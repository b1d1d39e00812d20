"""Each anti-tamper rule, and the legitimate code that must not trip it."""

import pytest

from pytest_sleepy.verify.tamper import find_tampering

REJECTED = {
    "defines the hidden module": ("mod sleepy_hidden_tests { }", "hidden test module"),
    "include_str": ('const K: &str = include_str!("/root/.ssh/id_rsa");', "include_str!"),
    "include": ('include!("/etc/passwd");', "include!"),
    "env": ('const H: &str = env!("HOME");', "env!"),
    "path attribute": ('#[path = "/etc/passwd"]\nmod m;', "#[path"),
    "no_implicit_prelude": ("#![no_implicit_prelude]\nfn f() {}", "#![no_implicit_prelude"),
    "cfg inner attribute": ("#![cfg(any())]\nfn f() {}", "#![cfg"),
    "process exit": ("fn f() { std::process::exit(0) }", "std::process"),
    "process via use": ("use std::process;\nfn f() { process::exit(0) }", "std::process"),
    "process via use tree": ("use std::{io, process::exit};\nfn f() { exit(0) }", "std::process"),
    "process via absolute path": ("fn f() { ::std::process::abort() }", "std::process"),
    "glob import of std": ("use std::*;\nfn f() { process::exit(0) }", "glob import"),
    "renamed std": ("use std as s;\nfn f() { s::process::exit(0) }", "renaming `std`"),
    "extern crate": ("extern crate std as s;", "extern crate"),
    "unsafe": ("fn f(p: *const u8) -> u8 { unsafe { *p } }", "unsafe"),
    "extern block": ('extern "C" { fn _exit(code: i32); }', "extern"),
    "no_mangle": ("#[no_mangle]\npub fn main() {}", "no_mangle"),
    "link_section": ('#[link_section = ".init_array"]\nstatic F: fn() = f;', "link_section"),
    "shadowing assert_eq": ("macro_rules! assert_eq { ($($t:tt)*) => {}; }", "assert_eq"),
    "renaming to a std macro": ("macro_rules! nothing { ($($t:tt)*) => {}; }\nuse nothing as assert;", "assert"),
    "shadowing a prelude type": ("pub struct String;", "String"),
    "cfg(test) on a function": ("#[cfg(test)]\nfn answer() -> u32 { 42 }", "cfg(test)"),
    "cfg(not(test))": ("#[cfg(not(test))]\nfn answer() -> u32 { 42 }", "cfg(test)"),
    "cfg_attr(test)": ("#[cfg_attr(test, derive(PartialEq))]\nstruct S;", "cfg_attr"),
    "inline assembly": ('fn f() { asm!("nop") }', "assembly"),
    "raw-identifier macro": ("macro_rules! r#assert_eq { ($($t:tt)*) => {}; }", "`assert_eq`"),
    "raw-identifier process": ("fn f() { std::r#process::exit(0) }", "std::process"),
    "raw-identifier include_str": ('const K: &str = r#include_str!("x");', "include_str!"),
    "raw-identifier String": ("pub struct r#String;", "`String`"),
    "raw-identifier rename": ("use crate::m::Liar as r#Vec;", "`Vec`"),
    "raw-identifier use of process": ("use std::{io, r#process};", "std::process"),
    "glob of std inside braces": ("use std::{*};", "glob import"),
    "renamed std through self": ("use std::{self as s};", "renaming `std`"),
    "primitive struct": ("struct u64;", "`u64`, shadowing the primitive type"),
    "primitive alias of a lying type": ("struct Liar;\ntype u32 = Liar;", "`u32`"),
    "alias of a non-std type": ("struct Liar;\ntype String = Liar;", "`String`"),
    "crate-local item renamed to a primitive": ("use crate::Liar as usize;", "`usize`"),
    "module named std": ("mod std { }", "`std`"),
    "cfg! macro": ("fn f() -> u32 { if cfg!(test) { 1 } else { 2 } }", "cfg!(test)"),
    "cfg! with not(test)": ("fn f() -> bool { cfg!(not(test)) }", "cfg!(test)"),
    "metavariable path": ("macro_rules! quit { ($m:ident) => { std::$m::exit(0) }; }", "`$m` into a path"),
    "metavariable macro name": ('macro_rules! read { ($m:ident) => { $m!("f") }; }', "`$m` into a macro name"),
    "metavariable item name": ("macro_rules! def { ($n:ident) => { struct $n; }; }", "`$n` into an item name"),
    "metavariable attribute": ('macro_rules! a { ($n:ident) => { #[$n = "f"] mod m; }; }', "`$n` into an attribute"),
    "metavariable in cfg": ("macro_rules! c { ($n:ident) => { #[cfg($n)] fn f() {} }; }", "cfg(test)"),
    "cfg! with brackets": ("fn f() -> bool { cfg![test] }", "cfg!(test)"),
    "cfg! with braces": ("fn f() -> bool { cfg!{not(test)} }", "cfg!(test)"),
    "a path assembled from token trees": (
        "macro_rules! leave { ($b:tt $s:tt $a:tt) => { $a $s $b $s exit(0) }; }", "into another splice"),
    "a repetition next to a path": ("macro_rules! go { ($($t:tt)*) => { std $($t)* :: exit(0) }; }", "`$(...)` into a path"),
    "a repetition as an item name": ("macro_rules! def { ($($t:tt)*) => { struct $($t)*; }; }", "into an item name"),
    "process carried by a macro call": ("macro_rules! m { ($($t:tt)*) => { }; }\nm!(process :: std);", "`process` inside a macro"),
    "path in cfg_attr": ('#[cfg_attr(all(), path = "/etc/passwd")]\nmod m;', "#[path"),
    "a module-level Err after an impl": ("struct W;\nimpl W { fn f(&self) {} }\ntype Err = W;", "`Err`"),
    "a struct named Ok in a function returning impl Trait": (
        "fn f() -> impl Iterator<Item = u8> { struct Ok; vec![1].into_iter() }", "`Ok`"),
    "a new trait on a std type": ("trait Sneaky { fn is_empty(self) -> bool; }\n"
                                  "impl Sneaky for Vec<usize> { fn is_empty(self) -> bool { true } }", "`Sneaky` for `Vec`"),
    "a blanket impl of a new trait": ("trait Sneaky {}\nimpl<T> Sneaky for T {}", "`Sneaky` for `T`"),
    "a new trait on a reference": ("trait S {}\nimpl<'a> S for &'a str {}", "`S` for `str`"),
    "a new trait imported as _": ("mod m { pub trait S {} impl S for Vec<u8> {} }\npub use m::S as _;", "`S` for `Vec`"),
    "a new trait named like a koan item": ("trait main {}\nimpl main for Vec<u8> {}", "`main` for `Vec`"),
    "a whitespace character rustc skips": ("fn f() -> bool { cfg\u200e!(test) }", "cfg!(test)"),
    "a form feed before the bang": ('const X: &str = include_str\x0c!("x");', "include_str!"),
    "a doc comment after a shebang": ('#!/** x */[allow r#"\nconst X: &str = include_str!("x");\n// "#]', "include_str!"),
}


@pytest.mark.parametrize("code, fragment", REJECTED.values(), ids=REJECTED.keys())
def test_tampering_is_rejected_with_the_reason(code, fragment):
    reason = find_tampering(code)
    assert reason is not None and reason.startswith("tampering: ")
    assert fragment in reason


ACCEPTED = {
    "a method called process": "struct W;\nimpl W { fn process(&self) {} }\nfn f(w: W) { w.process(); W::process(&w) }",
    "forbidden words in strings and comments": '// unsafe std::process::exit\nfn f() -> &\'static str { "include_str!(x) unsafe" }',
    "lint-level inner attributes": "#![allow(dead_code)]\n#![warn(clippy::all)]\nfn f() {}",
    "own cfg(test) test module": "fn f() -> u8 { 1 }\n#[cfg(test)]\n#[allow(unused)]\npub(crate) mod tests { #[test] fn t() {} }",
    "ordinary use of std": "use std::collections::HashMap as Map;\nuse std::{fmt, io::Write};\nfn f(_: Map<u8, u8>) {}",
    "own macros": "macro_rules! square { ($x:expr) => { $x * $x }; }\nfn f() -> u32 { square!(3) }",
    "threads": "fn f() { std::thread::spawn(|| 1).join().unwrap(); }",
    "casts": "fn f(x: u8) -> u32 { x as u32 }",
    "a Result alias of std's Result": "pub struct ClockError;\ntype Result<T> = std::result::Result<T, ClockError>;",
    "an alias written without spaces": "type Result<T>=::core::result::Result<T,()>;",
    "std items imported under their own names": "use std::fmt::Result;\nuse std::io::{self, Error as IoError};",
    "a Drop impl": "struct S;\nimpl Drop for S { fn drop(&mut self) {} }",
    "metavariables in expressions": "macro_rules! add { ($a:expr, $b:expr) => { $a + $b }; }\nfn f() -> u32 { add!(1, 2) }",
    "$crate paths": "macro_rules! make { () => { $crate::S }; }\npub struct S;",
    "the word test outside cfg": "fn test() -> bool { true }\n#[cfg(feature = \"x\")]\nfn g() {}",
    "raw identifiers that are not forbidden": "fn r#match() -> u32 { 1 }\nfn f() -> u32 { r#match() }",
    "a method named process inside a std macro": "struct W;\nimpl W { fn process(&self) -> u8 { 1 } }\n"
                                                  "fn f(w: W) { println!(\"{}\", w.process()); }",
    "splices separated by operators": "macro_rules! add { ($a:expr, $b:expr) => { ($a) + ($b) }; }",
    "a new trait on the candidate's own type": "trait Describe { fn d(&self) -> u8; }\nstruct Dog;\n"
                                                "impl Describe for Dog { fn d(&self) -> u8 { 1 } }\n"
                                                "impl<'a> Describe for &'a Dog { fn d(&self) -> u8 { 2 } }",
    "impl Trait in return position": "fn f() -> impl Iterator<Item = u8> { vec![1].into_iter() }",
    "an associated type named Err": "pub struct Port(u16);\npub struct Bad;\nimpl std::str::FromStr for Port {\n"
                                    "    type Err = Bad;\n    fn from_str(s: &str) -> Result<Self, Bad> { s.parse().map(Port).map_err(|_| Bad) }\n}",
    "an associated type in a generic impl": "struct W<T>(T);\nimpl<T: Clone> Iterator for W<T> where T: Copy {\n"
                                            "    type Item = T;\n    fn next(&mut self) -> Option<T> { None }\n}",
    "an associated type in a trait": "pub trait Parse { type Err; fn parse(s: &str) -> Option<Self::Err>; }",
}


@pytest.mark.parametrize("code", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_legitimate_code_is_not_called_tampering(code):
    assert find_tampering(code) is None


# Rule 9 with the koan known: the koan declares `trait Sink` with a generic method, and
# its hidden tests call `.flush_all()` (a koan method) and `.is_empty()` (a std one).
SINK_KOAN = ("pub trait Sink { fn put(&mut self, line: &str); fn flush_all<I: IntoIterator<Item = String>>(&mut self, i: I); }",)
SINK_TESTS = "#[test]\nfn t() { let mut s = Mem::default(); s.flush_all(vec![]); assert!(s.lines.is_empty()); }"
EXTENSION_TRAIT = ("pub trait Sink { fn put(&mut self, line: &str); }\n"
                   "pub trait SinkExt: Sink {\n"
                   "    fn flush_all<I: IntoIterator<Item = String>>(&mut self, lines: I) { for l in lines { self.put(&l) } }\n"
                   "}\n"
                   "impl<S: Sink + ?Sized> SinkExt for S {}\n")


def test_a_blanket_extension_trait_whose_methods_the_tests_call_as_koan_api_is_accepted():
    assert find_tampering(EXTENSION_TRAIT, SINK_KOAN, SINK_TESTS) is None


def test_a_blanket_trait_with_a_method_the_tests_call_on_std_values_is_refused():
    capturing = EXTENSION_TRAIT + "pub trait Quiet { fn is_empty(self) -> bool; }\nimpl<T> Quiet for T { fn is_empty(self) -> bool { true } }"
    reason = find_tampering(capturing, SINK_KOAN, SINK_TESTS)
    assert reason is not None and "`Quiet` for `T`" in reason


def test_a_renamed_trait_on_a_std_type_is_refused_whatever_its_methods():
    renamed = "mod m { pub trait Helper { fn shout(&self) -> u8 { 1 } } impl Helper for Vec<u8> {} }\npub use m::Helper as H;\nimpl H for String {}"
    assert find_tampering(renamed, SINK_KOAN, SINK_TESTS) is not None


def test_without_the_hidden_tests_every_method_counts():
    assert find_tampering(EXTENSION_TRAIT, SINK_KOAN) is not None


def test_a_deeply_nested_use_tree_is_flattened_without_recursion():
    depth = 5000
    code = "use std::" + "{a::" * depth + "process" + "}" * depth + ";"
    assert "std::process" in find_tampering(code)


def test_unlexable_code_is_left_to_the_verifier():
    # The verifier refuses it before rustc runs (test_verifier); the rules see no tokens.
    assert find_tampering('fn f() { "unterminated }') is None


def test_a_trait_the_koan_declares_may_be_implemented_for_std_types():
    code = "pub trait Summary { fn summary(&self) -> String; }\nimpl Summary for String { fn summary(&self) -> String { self.clone() } }"
    assert find_tampering(code) is not None  # without the koan, it is a new trait
    assert find_tampering(code, ("pub trait Summary { fn summary(&self) -> String; }",)) is None
