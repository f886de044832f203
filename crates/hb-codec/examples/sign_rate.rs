//! The node's own RSA-4096 signing rate: RSASSA-PSS-SHA512 signatures/s with the fixture
//! wallet `tests/fixtures/key-1.json`, through `rsa_pss::sign` (the path every
//! assignment and signed reply takes), on THREADS threads for SECONDS seconds.
//!
//! ```sh
//! cargo run --release -p hb-codec --example sign_rate -- [SECONDS] [THREADS]
//! ```
//!
//! Prints one line: the total signatures/s. `bench/scheduler.sh` prints it beside
//! `openssl speed rsa4096`.

use std::time::{Duration, Instant};

use hb_codec::Wallet;
use hb_codec::rsa_pss::{self, Hash};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map_or(default, |a| a.parse().expect("a whole number"))
}

fn main() {
    let seconds = arg(1, 5);
    let threads = arg(2, 1).max(1);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/key-1.json"
    );
    let wallet = Wallet::load(path).expect("the fixture wallet loads");
    let base = b"\"@signature-params\": (\"slot\" \"process\");alg=\"rsa-pss-sha512\"";
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let signed: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while Instant::now() < until {
                        rsa_pss::sign(&wallet, Hash::Sha512, base).expect("signs");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("joins")).sum()
    });
    let secs = started.elapsed().as_secs_f64();
    println!("{:.1}", signed as f64 / secs);
}
