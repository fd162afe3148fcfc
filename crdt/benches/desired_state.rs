//! Placeholder replaced by the benchmark of issue 3.
fn main() {}
