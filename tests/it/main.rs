//! The one integration-test binary. Servers run in-process on 127.0.0.1:0.

mod harness;
mod hub;
mod sim;
mod util;
