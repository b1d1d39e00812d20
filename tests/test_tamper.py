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
}


@pytest.mark.parametrize("code", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_legitimate_code_is_not_called_tampering(code):
    assert find_tampering(code) is None
