//! A writer to kill: writes random messages (nested, typed, some over 1 MB) through
//! `MessageCache::write` to the LMDB store in the directory given, durably, and prints
//! `ACK <index> <ID>` (flushed) after each write that returned `Ok`. Kill it with
//! SIGKILL at any moment; every acknowledged ID must then read back, identical.
//!
//! ```text
//! cargo run -p hb-store --example crash_writer -- /tmp/store [seed]
//! ```
//!
//! `tests/crash_safety.rs` does this 20 times (running the same writer in a child
//! process, the test binary itself) and checks the store after each kill.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: crash_writer <store directory> [seed]");
        return ExitCode::from(2);
    };
    let seed = match args.next().map(|s| s.parse::<u64>()) {
        None => 1,
        Some(Ok(seed)) => seed,
        Some(Err(e)) => {
            eprintln!("crash_writer: the seed must be a number: {e}");
            return ExitCode::from(2);
        }
    };
    common::crash_writer(&dir, seed)
}
