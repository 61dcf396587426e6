//! Helpers shared by the benchmarks.

use std::path::PathBuf;
use std::time::Duration;

/// Time per iteration of one benchmark, from criterion's median estimate of
/// the run that just finished.
pub fn median(id: &str) -> Option<Duration> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("criterion"))
        })
        .unwrap_or_else(|| PathBuf::from("target/criterion"));
    let json = std::fs::read_to_string(home.join(id).join("new/estimates.json")).ok()?;
    let estimates: serde_json::Value = serde_json::from_str(&json).ok()?;
    Some(Duration::from_nanos(
        estimates["median"]["point_estimate"].as_f64()? as u64,
    ))
}

/// Elements per second of one benchmark, from its median time per iteration.
pub fn rate(id: &str, elements_per_iter: f64) -> Option<f64> {
    median(id).map(|t| elements_per_iter / t.as_secs_f64())
}
