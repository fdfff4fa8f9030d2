//! The small plain messages slots send to the aggregator. Only the aggregator
//! turns them into metrics; slots never touch shared metric state.

use std::time::Duration;

use crate::net::client::FailureKind;
use crate::net::sse::{ServerTimings, Usage};

/// The id of trace `seq` in logs, files and the routing header.
pub fn trace_id(seq: u64) -> String {
    format!("trace-{seq}")
}

/// One finished request of a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    /// Trace sequence number (the order traces were started in).
    pub seq: u64,
    /// Index of the trace template in the workload.
    pub template: usize,
    /// Slot (worker thread) that ran it.
    pub slot: usize,
    /// Request index in the trace (`num_turns` is the final request).
    pub turn: usize,
    /// When it was sent, since the run started.
    pub start: Duration,
    /// First choice chunk, since it was sent (streaming only).
    pub ttft: Option<Duration>,
    /// Last byte, since it was sent.
    pub latency: Duration,
    /// `max_tokens` it asked for.
    pub max_tokens: u64,
    /// Usage the server reported (`None`: the server sent none).
    pub usage: Option<Usage>,
    /// Prompt tokens trie meant to send (BOS included).
    pub expected_prompt_tokens: u64,
    /// Sum of observed inter-token intervals and their number.
    pub itl_sum: Duration,
    /// Number of observed inter-token intervals.
    pub itl_count: u64,
    /// Attempts that failed before this one succeeded.
    pub retries: u32,
    /// llama.cpp timings, when the server sent them.
    pub timings: Option<ServerTimings>,
    /// FNV-1a of the request body (only when an event log is written).
    pub body_fnv1a: Option<u64>,
    /// Its choices were chat-shaped (`delta`), not completion-shaped.
    pub chat_shaped: bool,
    /// The shared prefix its trace started with (`--shared-prefix`).
    pub prefix_group: Option<u32>,
}

/// What follows a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Another attempt after a backoff (a retry).
    Retry,
    /// Another attempt at once on a new connection: the kept-alive one had
    /// been closed by the server since the slot's last response.
    Reconnect,
    /// None: the trace failed, or the run stopped.
    GiveUp,
}

/// One failed attempt of a request (retried, final, or cancelled by the stop).
#[derive(Clone, Debug, PartialEq)]
pub struct FailedAttempt {
    /// Trace sequence number.
    pub seq: u64,
    /// Template index.
    pub template: usize,
    /// Slot.
    pub slot: usize,
    /// Request index in the trace.
    pub turn: usize,
    /// Attempts of this request that failed before this one.
    pub attempt: u32,
    /// When it was sent, since the run started.
    pub start: Duration,
    /// When it failed, since the run started.
    pub end: Duration,
    /// `max_tokens` it asked for.
    pub max_tokens: u64,
    /// Prompt tokens trie meant to send (BOS included).
    pub expected_prompt_tokens: u64,
    /// What went wrong (`Cancelled`: the run stopped while it was in flight).
    pub kind: FailureKind,
    /// Detail.
    pub message: String,
    /// What follows.
    pub next: Next,
    /// FNV-1a of the request body (only when an event log is written).
    pub body_fnv1a: Option<u64>,
}

/// How a trace ended.
#[derive(Clone, Debug, PartialEq)]
pub enum TraceEnd {
    /// Every request succeeded.
    Completed,
    /// A request failed for good.
    Failed {
        /// The last failure's kind.
        kind: FailureKind,
        /// Its message.
        message: String,
    },
    /// Stopped by the deadline or Ctrl+C.
    Cancelled,
}

/// A message from a slot (or the feeder) to the aggregator.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A trace's first request is about to be sent.
    TraceStarted {
        /// Trace sequence number.
        seq: u64,
        /// Template index.
        template: usize,
        /// Slot running it.
        slot: usize,
        /// Since the run started.
        at: Duration,
        /// Open loop: how late the start was versus its schedule.
        late: Option<Duration>,
    },
    /// A request succeeded.
    Request(RequestRecord),
    /// A request attempt failed.
    Failed(FailedAttempt),
    /// A trace ended.
    TraceEnded {
        /// Trace sequence number.
        seq: u64,
        /// Since the run started.
        at: Duration,
        /// How.
        end: TraceEnd,
    },
    /// Open loop: an arrival found every in-flight place taken and waited.
    WaitedForLimit,
}
