//! Benchmark (not a test): the cost of one operator write on a node as the document grows,
//! and the cost of an idle tick — issue 11's "a write's cost independent of the document's
//! size". Reports medians and p99 per size.
//!
//! ```sh
//! cargo bench -p warren-node --bench write_cost -- --sizes 0,1000,10000 --writes 200
//! ```
//!
//! One [`NodeMachine`] (a one-member cluster) with a sled [`Store`] in a temporary directory,
//! driven the way the daemon's actor drives it for a write: `write` (a `service create` of 0
//! replicas), then every output (the persist, flushed; the gossip is dropped), then the API
//! snapshot the actor publishes after a write. A tick is `handle_tick` + `desired` +
//! `snapshot`, what the actor does every 250 ms. The document is grown to each size first
//! (not timed), directly through the document so that growing is not itself slowed by
//! the cost being measured. The write's median is also split into its three parts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use warren_crdt::{
    ClusterInfo, DesiredState, Member, MemberState, NodeId, ServiceName, ServiceSpec, Store,
};
use warren_node::core::Millis;
use warren_node::machine::{MachineConfig, NodeMachine, Output, Write};

struct Options {
    sizes: Vec<usize>,
    writes: usize,
}

fn options() -> Options {
    let mut o = Options {
        sizes: vec![0, 1_000, 10_000],
        writes: 200,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--sizes" => {
                o.sizes = args
                    .get(i + 1)
                    .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
                    .unwrap_or_default();
                i += 1;
            }
            "--writes" => {
                o.writes = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(o.writes);
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    o
}

fn spec() -> ServiceSpec {
    ServiceSpec {
        image: "warren/busybox:latest".into(),
        replicas: 0,
        ..Default::default()
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn drive(machine: &mut NodeMachine, store: &mut Store) {
    while let Some(output) = machine.poll_output() {
        if let Output::Persist { flush } = output {
            store.persist(machine.state_mut(), flush).expect("persist");
        }
    }
}

fn main() {
    let o = options();
    println!(
        "| services | write p50 | write p99 | p50 of: document write / persist / snapshot | tick p50 | tick p99 | p50 of: handle_tick / desired / snapshot |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &size in &o.sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = NodeId("n1".into());
        let founder = Member {
            id: me.clone(),
            name: "n1".into(),
            addrs: Vec::new(),
            labels: BTreeMap::new(),
            capabilities: Default::default(),
            platform: Default::default(),
            admitted_by: me.clone(),
            admitted_at: 0,
            state: MemberState::Active,
            availability: Default::default(),
        };
        let info = ClusterInfo {
            id: "bench".into(),
            name: "bench".into(),
            created_at: 0,
        };
        let mut state = DesiredState::new_cluster(&info, &founder).expect("cluster");
        for k in 0..size {
            let name = ServiceName::new(format!("s{k}")).expect("name");
            state.create_service(&name, &spec()).expect("create");
        }
        let mut store = Store::open(dir.path()).expect("store");
        store.compact(&mut state).expect("save");
        let mut machine = NodeMachine::new(
            me.clone(),
            "n1",
            "bench://api",
            state,
            MachineConfig::default(),
            Millis(0),
            1,
        );
        let mut now = 0u64;
        // Warm: one tick builds the caches a steady node has.
        machine.handle_tick(Millis(now));
        let _ = machine.desired(Millis(now));
        let _ = machine.snapshot(Millis(now), 0, 0);
        drive(&mut machine, &mut store);
        let mut writes = Vec::with_capacity(o.writes);
        let mut ticks = Vec::with_capacity(o.writes);
        let mut phases = Vec::with_capacity(o.writes);
        let mut tick_phases = Vec::with_capacity(o.writes);
        for k in 0..o.writes {
            let name = ServiceName::new(format!("new{k}")).expect("name");
            let started = Instant::now();
            machine
                .write(Write::CreateService(name, Box::new(spec())))
                .expect("write");
            let t1 = started.elapsed();
            drive(&mut machine, &mut store);
            let t2 = started.elapsed();
            let _ = machine.snapshot(Millis(now), 0, 0);
            writes.push(started.elapsed());
            phases.push((t1, t2 - t1, started.elapsed() - t2));
            now += 250;
            let started = Instant::now();
            machine.handle_tick(Millis(now));
            let t1 = started.elapsed();
            let _ = machine.desired(Millis(now));
            let t2 = started.elapsed();
            let _ = machine.snapshot(Millis(now), 0, 0);
            let t3 = started.elapsed();
            drive(&mut machine, &mut store);
            ticks.push(started.elapsed());
            tick_phases.push((t1, t2 - t1, t3 - t2));
        }
        writes.sort();
        ticks.sort();
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        type Phases = (Duration, Duration, Duration);
        let median = |of: &[Phases], pick: fn(&Phases) -> Duration| {
            let mut v: Vec<Duration> = of.iter().map(pick).collect();
            v.sort();
            ms(pct(&v, 50.0))
        };
        println!(
            "| {size} | {} | {} | {} / {} / {} | {} | {} | {} / {} / {} |",
            ms(pct(&writes, 50.0)),
            ms(pct(&writes, 99.0)),
            median(&phases, |p| p.0),
            median(&phases, |p| p.1),
            median(&phases, |p| p.2),
            ms(pct(&ticks, 50.0)),
            ms(pct(&ticks, 99.0)),
            median(&tick_phases, |p| p.0),
            median(&tick_phases, |p| p.1),
            median(&tick_phases, |p| p.2),
        );
    }
}
