//! Workspace-level integration tests live in `tests/tests/`. This library only compiles the
//! README's examples as doctests, so the README cannot drift from the code.

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
