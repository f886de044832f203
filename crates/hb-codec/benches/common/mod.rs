//! What every bench of this crate shares.

use std::time::Duration;

use criterion::Criterion;

/// Short runs as in hb-core's benches; 20 samples, since one RSA-4096 signature takes
/// milliseconds (criterion's linear sampling then needs 210 iterations per bench).
pub fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
}
