//! The broadcast tree alone over hundreds of peers (`warren_simulations::broadcast`): with 10 %
//! packet loss, every change reaches every peer, nearly all within 2 s, at fewer than three
//! copies per peer; and choosing near neighbours by round trip makes delivery faster than a
//! tree over random neighbours on the same network.

use warren_core::core::PlumConfig;
use warren_simulations::broadcast::{run, BroadcastParams};
use warren_simulations::NetConfig;

fn params(loss: f64, plum: PlumConfig) -> BroadcastParams {
    BroadcastParams {
        nodes: 400,
        seed: 3,
        net: NetConfig {
            loss,
            ..Default::default()
        },
        plum,
        warm_ms: 40_000,
        broadcasts: 20,
        ..Default::default()
    }
}

#[test]
fn every_peer_gets_every_change_within_two_seconds_at_ten_percent_loss() {
    let report = run(params(0.1, PlumConfig::default()));
    eprint!("{}", report.summary());
    assert!(
        report.to_all_ms.is_some(),
        "every broadcast reached every peer"
    );
    assert!(
        report.within_2s >= 0.9999,
        "{:.4} % within 2 s",
        report.within_2s * 100.0
    );
    assert!(report.copies < 3.0, "{:.2} copies per peer", report.copies);
}

#[test]
fn near_neighbours_beat_random_ones_on_the_same_network() {
    let near = run(params(0.0, PlumConfig::default()));
    let random = run(params(
        0.0,
        PlumConfig {
            near: 0,
            ..PlumConfig::default()
        },
    ));
    eprint!("{}{}", near.summary(), random.summary());
    assert!(near.swaps_per_node > 0.0);
    let (near_p50, random_p50) = (near.latency_ms[0], random.latency_ms[0]);
    assert!(
        (near_p50 as f64) < random_p50 as f64 * 0.8,
        "p50 {near_p50} ms with near neighbours, {random_p50} ms with random ones"
    );
}
