//! The scheduler's speed (issue 16), with criterion: one planning round of the pure
//! scheduler (`plan_observed`, the function the lease holder runs) at fleet sizes.
//!
//! ```sh
//! cargo bench -p warren-core --bench scheduler
//! ```
//!
//! Cases, each one round on the holder:
//!
//! - `place/N nodes/S slots`: nothing is assigned yet; every slot of `S / R` services of
//!   `R` replicas is placed over `N` live members, nine in ten labelled `zone=a|b|c`,
//!   half the services constrained to `node.labels.zone!=c` with a spread preference over
//!   zones and at most 5 replicas per node, every service reserving CPU and memory against
//!   the members' capacity. Placements per second = `S` / the round's time.
//! - `steady/N nodes/S slots`: the same cluster with every slot already placed and reported
//!   running where it is assigned: the round the holder runs every tick when nothing changes
//!   (it must find nothing to do).
//!
//! The sizes: 1,000 nodes with 100 services of 100 replicas, and issue 16's 10,000 nodes
//! with 1,000 services of 50 replicas (DESIGN §8's target: 50,000 placements a second on
//! one core; Nomad's C1M placed 3,750 a second with five servers).
//!
//! Figures and the machine they came from go into the README's "Placement rules".

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use warren_core::core::{plan_observed, Capacity, Observations, RunningCopy, Services, TaskHealth};
use warren_crdt::test_utils::{member, service_name, spec};
use warren_crdt::{
    Assignment, Constraint, Epoch, Lease, Member, NodeId, Service, SlotId, SpreadPreference,
};

/// One fleet: members, the live set, the services and what the holder observes.
struct Fleet {
    members: BTreeMap<NodeId, Member>,
    live: BTreeSet<NodeId>,
    services: Services,
    observed: Observations,
    lease: Lease,
}

fn fleet(nodes: usize, services_count: usize, replicas: u32) -> Fleet {
    let mut members = BTreeMap::new();
    let mut capacity = BTreeMap::new();
    for i in 0..nodes {
        let mut m = member(&format!("node-{i:05}"));
        if i % 10 != 0 {
            m.labels
                .insert("zone".into(), ["a", "b", "c"][i % 3].to_string());
        }
        capacity.insert(
            m.id.clone(),
            Capacity {
                nano_cpus: 4_000_000_000,
                memory_bytes: 8 << 30,
            },
        );
        members.insert(m.id.clone(), m);
    }
    let live = members.keys().cloned().collect();
    let mut services = Services::new();
    for s in 0..services_count {
        let name = service_name(&format!("svc-{s:04}"));
        let mut spec = spec("warren/busybox:latest", replicas);
        spec.resources.nano_cpus = Some(10_000_000);
        spec.resources.memory_bytes = Some(16 << 20);
        if s % 2 == 0 {
            spec.placement.constraints = vec!["node.labels.zone!=c"
                .parse::<Constraint>()
                .expect("a valid constraint")];
            spec.placement.preferences = vec!["spread=node.labels.zone"
                .parse::<SpreadPreference>()
                .expect("a valid preference")];
            spec.placement.max_replicas_per_node = Some(5);
        }
        services.insert(
            name.clone(),
            Service {
                name,
                generation: 1,
                deleted: false,
                spec,
                previous_spec: None,
                older_specs: Default::default(),
                rollout: None,
            },
        );
    }
    let lease = Lease {
        epoch: Epoch(1),
        holder: NodeId("node-00000".into()),
    };
    let observed = Observations {
        capacity,
        reported: members.keys().cloned().collect(),
        rebalance: true,
        ..Default::default()
    };
    Fleet {
        members,
        live,
        services,
        observed,
        lease,
    }
}

fn place(f: &Fleet, assignments: &BTreeMap<SlotId, Assignment>) -> BTreeMap<SlotId, Assignment> {
    plan_observed(
        &f.services,
        &f.members,
        &f.live,
        assignments,
        &f.lease,
        &f.observed,
    )
    .put
    .into_iter()
    .collect()
}

fn scheduler(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler");
    group.sample_size(10);
    for (nodes, services, replicas) in [(1_000, 100, 100), (10_000, 1_000, 50)] {
        let slots = services * replicas as usize;
        let mut f = fleet(nodes, services, replicas);
        let none = BTreeMap::new();
        let placed = place(&f, &none);
        // Every slot fits: the figure is of placements, not of pending reasons.
        assert_eq!(placed.len(), slots, "every slot placed");
        group.throughput(Throughput::Elements(slots as u64));
        group.bench_function(
            BenchmarkId::new("place", format!("{nodes} nodes/{slots} slots")),
            |b| b.iter(|| black_box(place(&f, &none))),
        );
        // Steady: every slot runs where it is assigned.
        for (slot, a) in &placed {
            f.observed.copies.insert(
                slot.clone(),
                vec![RunningCopy {
                    node: a.node.clone(),
                    generation: 1,
                    age_ms: 60_000,
                    health: TaskHealth::Healthy,
                }],
            );
        }
        assert!(
            place(&f, &placed).is_empty(),
            "a steady round changes nothing"
        );
        group.bench_function(
            BenchmarkId::new("steady", format!("{nodes} nodes/{slots} slots")),
            |b| b.iter(|| black_box(place(&f, &placed))),
        );
    }
    group.finish();
}

criterion_group!(benches, scheduler);
criterion_main!(benches);
