//! The one integration-test binary. Servers run on 127.0.0.1: in-process, or
//! as `trie sim` child processes where a test needs to kill one.

mod chat;
mod embeddings;
mod files;
mod harness;
mod hostile;
mod hub;
mod inputs;
mod prefix;
mod real;
mod report;
mod scripted;
mod sim;
#[path = "../../benches/support/mod.rs"]
mod support;
mod sweep;
mod text;
mod util;
