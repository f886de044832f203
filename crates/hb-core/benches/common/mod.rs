//! What every bench of this crate shares.

use std::time::Duration;

use criterion::Criterion;

/// Short runs, so that the whole suite measures in about two minutes on 2 cores.
pub fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
}
