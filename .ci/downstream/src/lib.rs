//! The workspace README's examples, compiled as a user's crate compiles them.
#![doc = include_str!("../../../README.md")]
