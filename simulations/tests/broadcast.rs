//! The broadcast tree alone over hundreds of peers (`warren_simulations::broadcast`): with 10 %
//! packet loss, every change reaches every peer, nearly all within 2 s, at fewer than three
//! copies per peer; choosing near neighbours by round trip makes delivery faster than a
//! tree over random neighbours on the same network; and a broadcast's seeds bring it to
//! every peer sooner.

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
    // The neighbour rule alone: no seeds on either side (they shorten both trees' paths).
    let tree_only = PlumConfig {
        seed_every: 0,
        ..PlumConfig::default()
    };
    let near = run(params(0.0, tree_only));
    let random = run(params(
        0.0,
        PlumConfig {
            near: 0,
            ..tree_only
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

#[test]
fn seeds_bring_a_change_to_every_peer_sooner_at_under_three_copies() {
    // 400 peers: the default gives 6 seeds per broadcast.
    let seeded = run(params(0.0, PlumConfig::default()));
    let tree_only = run(params(
        0.0,
        PlumConfig {
            seed_every: 0,
            ..PlumConfig::default()
        },
    ));
    eprint!("{}{}", seeded.summary(), tree_only.summary());
    let (Some(seeded_all), Some(tree_all)) = (seeded.to_all_ms, tree_only.to_all_ms) else {
        panic!("a broadcast missed a peer");
    };
    assert!(
        seeded_all[0] < tree_all[0] && seeded.latency_ms[1] < tree_only.latency_ms[1],
        "to all peers p50 {} ms seeded, {} ms tree only; per peer p99 {} against {} ms",
        seeded_all[0],
        tree_all[0],
        seeded.latency_ms[1],
        tree_only.latency_ms[1]
    );
    assert!(seeded.copies < 3.0, "{:.2} copies per peer", seeded.copies);
}
