//! Talking to the endpoint: the per-slot HTTP clients (trie's own HTTP/1.1
//! for plain-HTTP completions, ureq for the rest), the TCP transport under
//! them, SSE parsing.

pub mod client;
pub mod http1;
pub mod scan;
pub mod sse;
pub mod transport;
