//! Synthetic text exact to the token, and the tokenizer that counts it.

pub mod prompt;
pub mod tokenizer;
