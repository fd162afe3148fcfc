//! Scenarios over the real core: leader crash, partition with writes on both sides, heal.

use warren_simulations::Simulation;

#[test]
fn leader_crash_fails_over_and_replicas_return() {
    let mut sim = Simulation::new(5, 7);
    sim.create_service(2, "web", 5);
    let took = sim.run_until(10_000, |s| s.running("web") == 5);
    assert!(took.is_some(), "5 replicas within 10 s of virtual time");
    let holders = sim.one_leader_per_component().expect("one leader");
    let holder = holders.values().next().cloned().expect("holder");
    let old_epoch = sim
        .leases()
        .values()
        .flatten()
        .next()
        .map(|l| l.epoch)
        .expect("lease");
    let h = (0..5).find(|&i| *sim.id(i) == holder).expect("index");

    sim.crash(h);
    // Failover: down after 3 s, lease TTL 3 s, then re-placement. Virtual time is exact.
    let failover = sim.run_until(15_000, |s| {
        s.running_slots("web").len() == 5
            && s.one_leader_per_component()
                .is_ok_and(|l| !l.values().any(|x| *x == holder))
    });
    let failover = failover.expect("failover within 15 s");
    assert!(
        failover >= sim.config().down_after_ms,
        "not before the holder is judged down"
    );
    let new_epoch = sim
        .leases()
        .values()
        .flatten()
        .next()
        .map(|l| l.epoch)
        .expect("lease");
    assert!(new_epoch > old_epoch);
    assert_eq!(sim.running("web"), 5);

    // The old holder comes back: it follows, and the cluster keeps exactly 5 replicas.
    sim.restart(h);
    sim.run_for(10_000);
    assert!(sim.converged());
    let leaders = sim
        .one_leader_per_component()
        .expect("one leader after restart");
    assert_eq!(leaders.len(), 1);
    assert_eq!(sim.running("web"), 5);
}

#[test]
fn both_sides_of_a_partition_keep_working_and_merge_on_heal() {
    let mut sim = Simulation::new(5, 11);
    sim.create_service(0, "base", 5);
    sim.run_until(10_000, |s| s.running("base") == 5)
        .expect("base running");

    sim.partition(&[&[0, 1], &[2, 3, 4]]);
    sim.create_service(0, "left", 2);
    sim.create_service(3, "right", 3);
    sim.run_for(15_000);
    // Each component elects its own leader and runs everything it knows of (autonomy).
    let leaders = sim.one_leader_per_component().expect("a leader per side");
    assert_eq!(leaders.len(), 2, "{leaders:?}");
    assert_eq!(sim.running_slots("left").len(), 2);
    assert_eq!(sim.running_slots("right").len(), 3);

    sim.heal();
    let healed = sim.run_until(20_000, |s| {
        s.one_leader_per_component().is_ok_and(|l| l.len() == 1)
            && s.running("base") == 5
            && s.running("left") == 2
            && s.running("right") == 3
    });
    assert!(
        healed.is_some(),
        "one leader and exact replica counts after the heal"
    );
    sim.run_for(3_000);
    assert!(sim.converged(), "one document everywhere");
    assert_eq!(
        sim.running("base"),
        5,
        "no surplus replica survives the heal"
    );
}

#[test]
fn a_seed_replays_exactly() {
    let run = |seed| {
        let mut sim = Simulation::new(4, seed);
        sim.create_service(1, "web", 3);
        sim.run_for(5_000);
        sim.crash(0);
        sim.run_for(8_000);
        sim.partition(&[&[1], &[2, 3]]);
        sim.run_for(8_000);
        sim.heal();
        sim.run_for(8_000);
        (sim.trace_hash(), sim.running("web"))
    };
    assert_eq!(run(3), run(3));
}
