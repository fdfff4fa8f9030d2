//! Synthetic text exact to the token, the tokenizer that counts it, and the
//! chat templates that wrap it.

pub mod chat;
pub mod content;
pub mod conversation;
pub mod prompt;
pub mod tokenizer;
