//! Talking to the endpoint: the per-slot HTTP clients, the TCP transport under them, SSE parsing.

pub mod client;
pub mod sse;
pub mod transport;
