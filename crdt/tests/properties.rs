//! Property tests of the desired-state document (DESIGN §3; merge rules in the crate docs).
//!
//! A run starts 2–7 replicas as copies of one initialised cluster document, each with its own
//! node id, then plays a random sequence of steps: operations on random replicas, sync
//! conversations between random pairs over a lossy channel (messages dropped, delivered twice,
//! conversations cut short), out-of-order gossip of change bytes, and restarts from saved bytes.
//! A clean heal phase follows (every pair syncs with fresh states until nothing changes). Then:
//!
//! - convergence: every replica has the same heads, history and typed read-out (cluster,
//!   members, services, lease, assignments, tokens, jobs, secrets, volumes), and a save/load
//!   round trip keeps them;
//! - no acknowledged write is lost: every change an operation committed is in the final history;
//! - each acknowledged operation made at most one change, the sole head right after, and the
//!   returned bytes are that change; a refusal matches what the replica could see
//!   (`ServiceExists` iff it saw a live service, and so on) and changes nothing;
//! - the merge rules, against a model that records every write with its causal past (the hashes
//!   its author held). A key ends up with the values of the writes no other write of that key
//!   causally follows ("surviving" writes; a delete keeps nothing and a concurrent put survives
//!   it). From that: the lease and each assignment are exactly the greatest `(epoch, holder)`
//!   among surviving claims / writes of the slot; fields read through Automerge's
//!   last-writer-wins hold one of their surviving values; a service, job, secret or volume is
//!   one of its surviving (re-)creations, as written; a job keeps every attempt appended to it;
//! - the service life cycle (its own test): an acknowledged create that no acknowledged delete
//!   has in its causal past leaves the service live; an acknowledged delete that has every
//!   acknowledged create of the name in its causal past leaves it not live;
//! - an operation that commits nothing returns empty bytes (its own test);
//! - the merge laws on triples of diverged replicas: commutative, associative, idempotent.
//!
//! At the end, plain tests: the minimal cases of what these properties found, and the author
//! named by `history()` (which depends on random actor ids, out of proptest's control).
//!
//! Case counts keep the whole file well under a minute in a debug build on two cores. Every
//! `PROPTEST_*` environment variable still applies (the `proptest!` macro puts them on top of
//! the config below), so a longer sweep is e.g.
//! `PROPTEST_CASES=2000 cargo test --release -p warren-crdt --test properties`.
//! Failing seeds are written to `crdt/proptest-regressions/properties.txt` and replayed first.

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use warren_crdt::{
    Assignment, ClusterInfo, CrdtError, DesiredState, Epoch, Job, JobAttempt, JobSpec, JobState,
    Lease, Member, MemberState, NodeId, SecretRecord, Service, ServiceName, ServiceSpec, SlotId,
    SyncState, TokenRecord, Volume,
};

type TestResult<T = ()> = Result<T, TestCaseError>;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/properties.txt"
        )))),
        ..ProptestConfig::default()
    }
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

// ---- the world ---------------------------------------------------------------------------

/// Service names: a small pool so that creates, updates and deletes collide.
const NAMES: [&str; 3] = ["a", "b", "c"];
const IMAGES: [&str; 3] = ["img0", "img1", "img2"];
/// Env keys an update may set or remove (the key `id` is the creation tag, never updated).
const ENV_KEYS: [&str; 2] = ["k0", "k1"];
/// Field names of a service object in the model.
const GENERATION: &str = "generation";
const DELETED: &str = "deleted";
const IMAGE: &str = "image";
const REPLICAS: &str = "replicas";
const COMMAND: &str = "command";
const PREVIOUS: &str = "previous_spec";
const ENV_FIELDS: [&str; 2] = ["env.k0", "env.k1"];
/// Slots that assignments may be written for.
const SLOTS: [(&str, u32); 3] = [("a", 0), ("a", 1), ("b", 0)];

fn node(i: usize) -> NodeId {
    NodeId(format!("N{i}"))
}

fn service_name(i: usize) -> ServiceName {
    ServiceName::new(NAMES[i % NAMES.len()]).expect("valid name")
}

fn slot(i: u8) -> SlotId {
    let (service, slot) = SLOTS[usize::from(i) % SLOTS.len()];
    SlotId {
        service: ServiceName::new(service).expect("valid name"),
        slot,
    }
}

fn cluster_info() -> ClusterInfo {
    ClusterInfo {
        id: "c1".into(),
        name: "lab".into(),
        created_at: 5,
    }
}

fn founder() -> Member {
    Member {
        id: node(0),
        name: "n0".into(),
        addrs: vec!["/ip4/10.0.0.1/udp/1/quic-v1/p2p/N0".into()],
        labels: BTreeMap::new(),
        capabilities: Default::default(),
        platform: Default::default(),
        admitted_by: node(0),
        admitted_at: 0,
        state: MemberState::Active,
        availability: Default::default(),
    }
}

/// The env entry that tags a service object with the operation that created it, so the test
/// can tell which of several conflicting (re-)creations a replica sees.
fn tag(uid: u64) -> String {
    format!("u{uid}")
}

fn service_uid(service: &Service) -> Option<u64> {
    service.spec.env.get("id")?.strip_prefix('u')?.parse().ok()
}

fn token_uid(token: &TokenRecord) -> Option<u64> {
    token.digest.strip_prefix('d')?.parse().ok()
}

fn base_spec() -> ServiceSpec {
    ServiceSpec {
        image: IMAGES[0].into(),
        replicas: 1,
        command: vec![],
        env: BTreeMap::new(),
        ports: vec![],
        secrets: Vec::new(),
        ..Default::default()
    }
}

/// The hex hash of change bytes, `None` when they are not one change.
fn change_hash(bytes: &[u8]) -> Option<String> {
    automerge::Change::from_bytes(bytes.to_vec())
        .ok()
        .map(|c| c.hash().to_string())
}

// ---- steps and their strategies ----------------------------------------------------------

#[derive(Debug, Clone)]
enum EpochPick {
    /// Any small epoch, as a stale or careless client might claim.
    Fixed(u64),
    /// `k` above the epoch of the lease the replica sees (0: the correct `next()`).
    AboveCurrent(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        name: usize,
        image: usize,
        replicas: u32,
    },
    /// Read-modify-write of the spec the replica sees, as the CLI does.
    Update {
        name: usize,
        image: Option<usize>,
        replicas: Option<u32>,
        command: Option<u8>,
        env: Option<(usize, Option<u8>)>,
    },
    Scale {
        name: usize,
        replicas: u32,
    },
    Delete {
        name: usize,
    },
    ClaimLease {
        epoch: EpochPick,
    },
    /// One scheduling round: `(slot, node, epoch, spec generation)` puts and slot removals.
    Schedule {
        put: Vec<(u8, u8, u64, u64)>,
        remove: Vec<u8>,
    },
    AddMember {
        id: u8,
        name: u8,
        label: Option<u8>,
    },
    SetAddrs {
        id: u8,
        addr: u8,
    },
    AddToken {
        id: u8,
        uses: u64,
    },
    Admit {
        token: u8,
        member: u8,
    },
    CreateJob {
        id: u8,
        image: usize,
    },
    /// An attempt (exit code if it ended) and the state it moves the job to.
    JobAttempt {
        id: u8,
        exit_code: Option<i64>,
        state: u8,
    },
    PutSecret {
        name: u8,
    },
    RemoveSecret {
        name: u8,
    },
    PutVolume {
        name: u8,
        node: u8,
    },
    RemoveVolume {
        name: u8,
    },
}

/// What the lossy channel does with one sync message.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Deliver,
    Drop,
    Duplicate,
}

/// Replica indices are taken modulo the number of replicas.
#[derive(Debug, Clone)]
enum Step {
    Op {
        replica: usize,
        op: Op,
    },
    /// One sync conversation, `from` speaking first; one fate per generated message, and the
    /// conversation ends when the fates run out (a connection that closes mid-way).
    Exchange {
        from: usize,
        to_offset: usize,
        fates: Vec<Fate>,
    },
    /// Gossip of one acknowledged change's bytes, in any order (missing dependencies included).
    Gossip {
        change: usize,
        to: usize,
    },
    /// The node restarts from its saved bytes (fresh actor id, sync states lost).
    Restart {
        replica: usize,
    },
}

fn epoch_pick() -> impl Strategy<Value = EpochPick> {
    prop_oneof![
        (0..4u64).prop_map(EpochPick::Fixed),
        (0..2u64).prop_map(EpochPick::AboveCurrent),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..NAMES.len(), 0..IMAGES.len(), 0..4u32)
            .prop_map(|(name, image, replicas)| Op::Create { name, image, replicas }),
        2 => (
            0..NAMES.len(),
            option::of(0..IMAGES.len()),
            option::of(0..4u32),
            option::of(0..2u8),
            option::of((0..ENV_KEYS.len(), option::of(0..2u8))),
        )
            .prop_map(|(name, image, replicas, command, env)| Op::Update {
                name,
                image,
                replicas,
                command,
                env,
            }),
        2 => (0..NAMES.len(), 0..4u32).prop_map(|(name, replicas)| Op::Scale { name, replicas }),
        2 => (0..NAMES.len()).prop_map(|name| Op::Delete { name }),
        2 => epoch_pick().prop_map(|epoch| Op::ClaimLease { epoch }),
        4 => (
            vec((0..3u8, 0..4u8, 0..4u64, 0..3u64), 0..3),
            vec(0..3u8, 0..2),
        )
            .prop_map(|(put, remove)| Op::Schedule { put, remove }),
        1 => (0..4u8, 0..2u8, option::of(0..2u8))
            .prop_map(|(id, name, label)| Op::AddMember { id, name, label }),
        1 => (0..4u8, 0..2u8).prop_map(|(id, addr)| Op::SetAddrs { id, addr }),
        1 => (0..2u8, 0..3u64).prop_map(|(id, uses)| Op::AddToken { id, uses }),
        1 => (0..2u8, 0..4u8).prop_map(|(token, member)| Op::Admit { token, member }),
        1 => (0..2u8, 0..IMAGES.len()).prop_map(|(id, image)| Op::CreateJob { id, image }),
        2 => (0..2u8, option::of(0..2i64), 0..4u8)
            .prop_map(|(id, exit_code, state)| Op::JobAttempt { id, exit_code, state }),
        1 => (0..2u8).prop_map(|name| Op::PutSecret { name }),
        1 => (0..2u8).prop_map(|name| Op::RemoveSecret { name }),
        1 => (0..2u8, 0..4u8).prop_map(|(name, node)| Op::PutVolume { name, node }),
        1 => (0..2u8).prop_map(|name| Op::RemoveVolume { name }),
    ]
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        6 => Just(Fate::Deliver),
        1 => Just(Fate::Drop),
        1 => Just(Fate::Duplicate),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..7usize, op()).prop_map(|(replica, op)| Step::Op { replica, op }),
        4 => (0..7usize, 0..6usize, vec(fate(), 1..16))
            .prop_map(|(from, to_offset, fates)| Step::Exchange { from, to_offset, fates }),
        1 => (0..64usize, 0..7usize).prop_map(|(change, to)| Step::Gossip { change, to }),
        1 => (0..7usize).prop_map(|replica| Step::Restart { replica }),
    ]
}

// ---- the model ---------------------------------------------------------------------------

/// A key of the document, as the model tracks it. `Field(uid, name)` is a field of the service
/// object made by the create with that uid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Reg {
    Lease,
    Slot(SlotId),
    Member(NodeId),
    MemberAddrs(u64),
    Token(String),
    TokenUses(u64),
    Service(ServiceName),
    Field(u64, &'static str),
    Job(String),
    JobState(u64),
    Secret(String),
    Volume(String),
}

// A test's model values: their size does not matter (a spec grew with its placement).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
enum Val {
    /// A new object (member, token, service) made by the operation with this uid.
    Obj(u64),
    Lease(Lease),
    Assign(Assignment),
    Text(String),
    Strings(Vec<String>),
    Num(u64),
    Bool(bool),
    Spec(ServiceSpec),
}

/// A change made by an acknowledged operation (index 0: the cluster's init change).
struct Made {
    hash: String,
    /// Hashes of every change its author held when making it: its causal past.
    past: BTreeSet<String>,
    /// The bytes the operation returned (empty for the init change).
    bytes: Vec<u8>,
    what: String,
}

#[derive(Default)]
struct Model {
    made: Vec<Made>,
    /// Every write of every key: `(index in made, value or None for a delete)`.
    writes: BTreeMap<Reg, Vec<(usize, Option<Val>)>>,
    claims: Vec<(usize, Lease)>,
    creates: Vec<(usize, ServiceName)>,
    deletes: Vec<(usize, ServiceName)>,
    /// Members as written, by `admitted_at` (the uid of the operation that wrote them).
    members: BTreeMap<i64, Member>,
    /// Tokens as written, by uid (their digest is `d<uid>`).
    tokens: BTreeMap<u64, TokenRecord>,
    /// Jobs as created, by uid (tagged in their env like services).
    jobs: BTreeMap<u64, Job>,
    /// Acknowledged attempts, by the uid of the job object they were appended to.
    attempts: BTreeMap<u64, Vec<JobAttempt>>,
    /// Secrets as written, by uid (their version).
    secrets: BTreeMap<u64, SecretRecord>,
    /// Volumes as written, by uid (tagged in their options).
    volumes: BTreeMap<u64, Volume>,
    next_uid: u64,
}

impl Model {
    /// Whether change `a` is in the causal past of change `b`.
    fn precedes(&self, a: usize, b: usize) -> bool {
        a != b && self.made[b].past.contains(&self.made[a].hash)
    }

    /// The values the merged document keeps for `reg`: those of the puts that no other write of
    /// `reg` causally follows. A delete keeps nothing; a put concurrent with it survives.
    ///
    /// Exact for keys written only with new objects and deletes (lease, slots, members, tokens,
    /// services, jobs, secrets, volumes): an Automerge op supersedes exactly the values its
    /// author saw. For a scalar field, a put of the value the key already holds writes nothing
    /// (or only deletes the losing conflicts) while the model records a write; the set can then
    /// be larger than the document's but never misses a value it holds, so checks that a value
    /// is *one of* the surviving ones stay sound.
    fn surviving(&self, reg: &Reg) -> Vec<&Val> {
        let Some(writes) = self.writes.get(reg) else {
            return Vec::new();
        };
        writes
            .iter()
            .filter(|(c, _)| !writes.iter().any(|(o, _)| self.precedes(*c, *o)))
            .filter_map(|(_, v)| v.as_ref())
            .collect()
    }

    /// The keys `pick` selects that have a surviving value (present in the merged document).
    fn keys_with_values(&self, pick: impl Fn(&Reg) -> Option<String>) -> BTreeSet<String> {
        self.writes
            .keys()
            .filter(|r| !self.surviving(r).is_empty())
            .filter_map(pick)
            .collect()
    }

    /// Checks a field read through Automerge's last-writer-wins: absent when no put survives,
    /// else one of the surviving values.
    fn check_lww(&self, reg: Reg, actual: Option<Val>) -> TestResult {
        let allowed = self.surviving(&reg);
        let ok = match &actual {
            None => allowed.is_empty(),
            Some(v) => allowed.contains(&v),
        };
        prop_assert!(
            ok,
            "{reg:?} reads {actual:?}; surviving writes allow {allowed:?}"
        );
        Ok(())
    }
}

/// What the replica's view says an operation must do.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Refusal {
    ServiceExists,
    UnknownService,
    UnknownMember,
    UnknownToken,
    JobExists,
    UnknownJob,
    UnknownSecret,
    UnknownVolume,
}

enum Event {
    None,
    Create(ServiceName),
    Delete(ServiceName),
    Claim(Lease),
    NewMember(Member),
    NewToken(u64, TokenRecord),
    NewJob(u64, Job),
    Attempt(u64, JobAttempt),
    NewSecret(u64, SecretRecord),
    NewVolume(u64, Volume),
}

struct Plan {
    refusal: Option<Refusal>,
    writes: Vec<(Reg, Option<Val>)>,
    /// Whether an acknowledged run must commit a change. False where every write may be a
    /// no-op: Automerge writes nothing for a put of the value a key already holds alone, nor
    /// for a delete of an absent key.
    must_change: bool,
    event: Event,
    what: String,
}

impl Plan {
    fn new(what: String) -> Self {
        Plan {
            refusal: None,
            writes: Vec::new(),
            must_change: true,
            event: Event::None,
            what,
        }
    }
}

/// Runs `op` on `doc` as replica `me`, with `uid` for whatever it creates: the plan (from the
/// replica's view before the operation) and the operation's result.
fn run_op(
    doc: &mut DesiredState,
    me: usize,
    op: &Op,
    uid: u64,
) -> (Plan, Result<Option<Vec<u8>>, CrdtError>) {
    match op {
        Op::Create {
            name,
            image,
            replicas,
        } => {
            let n = service_name(*name);
            let view = doc.services().get(&n).cloned();
            let spec = ServiceSpec {
                image: IMAGES[*image].into(),
                replicas: *replicas,
                command: vec![],
                env: [("id".to_string(), tag(uid))].into(),
                ports: vec![],
                secrets: Vec::new(),
                ..Default::default()
            };
            let mut plan = Plan::new(format!("create {n} #{uid} {} x{replicas}", spec.image));
            if view.as_ref().is_some_and(|s| !s.deleted) {
                plan.refusal = Some(Refusal::ServiceExists);
            }
            let generation = view.map_or(1, |s| s.generation + 1);
            let field = |f| Reg::Field(uid, f);
            plan.writes = vec![
                (Reg::Service(n.clone()), Some(Val::Obj(uid))),
                (field(GENERATION), Some(Val::Num(generation))),
                (field(DELETED), Some(Val::Bool(false))),
                (field(IMAGE), Some(Val::Text(spec.image.clone()))),
                (field(REPLICAS), Some(Val::Num(u64::from(*replicas)))),
                (field(COMMAND), Some(Val::Strings(vec![]))),
            ];
            plan.event = Event::Create(n.clone());
            let result = doc.create_service(&n, &spec).map(Some);
            (plan, result)
        }
        Op::Update {
            name,
            image,
            replicas,
            command,
            env,
        } => {
            let n = service_name(*name);
            let view = doc.service(&n);
            let old = view.as_ref().map_or_else(base_spec, |s| s.spec.clone());
            let mut new = old.clone();
            if let Some(i) = image {
                new.image = IMAGES[*i].into();
            }
            if let Some(r) = replicas {
                new.replicas = *r;
            }
            if let Some(c) = command {
                new.command = vec!["run".into(), format!("x{c}")];
            }
            if let Some((k, v)) = env {
                match v {
                    Some(v) => new.env.insert(ENV_KEYS[*k].into(), format!("v{v}")),
                    None => new.env.remove(ENV_KEYS[*k]),
                };
            }
            let mut plan = Plan::new(format!("update {n} to {new:?}"));
            match view.as_ref().and_then(|s| Some((s, service_uid(s)?))) {
                None => plan.refusal = Some(Refusal::UnknownService),
                Some(_) if old == new => plan.must_change = false,
                Some((s, uid)) => {
                    let field = |f| Reg::Field(uid, f);
                    plan.what = format!("update {n} #{uid} to {new:?}");
                    if old.image != new.image {
                        plan.writes
                            .push((field(IMAGE), Some(Val::Text(new.image.clone()))));
                    }
                    if old.replicas != new.replicas {
                        plan.writes
                            .push((field(REPLICAS), Some(Val::Num(u64::from(new.replicas)))));
                    }
                    if old.command != new.command {
                        plan.writes
                            .push((field(COMMAND), Some(Val::Strings(new.command.clone()))));
                    }
                    for (k, f) in ENV_KEYS.iter().zip(ENV_FIELDS) {
                        if old.env.get(*k) != new.env.get(*k) {
                            let v = new.env.get(*k).map(|v| Val::Text(v.clone()));
                            plan.writes.push((field(f), v));
                        }
                    }
                    let rebuild = ServiceSpec {
                        replicas: new.replicas,
                        ..old.clone()
                    } != new;
                    if rebuild {
                        plan.writes
                            .push((field(GENERATION), Some(Val::Num(s.generation + 1))));
                        plan.writes.push((field(PREVIOUS), Some(Val::Spec(old))));
                    }
                }
            }
            let result = doc.update_service(&n, &new).map(Some);
            (plan, result)
        }
        Op::Scale { name, replicas } => {
            let n = service_name(*name);
            let mut plan = Plan::new(format!("scale {n} x{replicas}"));
            // A put of the count the key already holds is no change at all.
            plan.must_change = false;
            match doc.service(&n).as_ref().and_then(service_uid) {
                None => plan.refusal = Some(Refusal::UnknownService),
                Some(uid) => {
                    plan.what = format!("scale {n} #{uid} x{replicas}");
                    plan.writes.push((
                        Reg::Field(uid, REPLICAS),
                        Some(Val::Num(u64::from(*replicas))),
                    ));
                }
            }
            let result = doc.scale_service(&n, *replicas).map(Some);
            (plan, result)
        }
        Op::Delete { name } => {
            let n = service_name(*name);
            let mut plan = Plan::new(format!("delete {n}"));
            match doc.service(&n).as_ref().and_then(service_uid) {
                None => plan.refusal = Some(Refusal::UnknownService),
                Some(uid) => {
                    plan.what = format!("delete {n} #{uid}");
                    plan.writes
                        .push((Reg::Field(uid, DELETED), Some(Val::Bool(true))));
                    plan.event = Event::Delete(n.clone());
                }
            }
            let result = doc.delete_service(&n).map(Some);
            (plan, result)
        }
        Op::ClaimLease { epoch } => {
            let current = doc.lease().map_or(0, |l| l.epoch.0);
            let epoch = match epoch {
                EpochPick::Fixed(e) => *e,
                EpochPick::AboveCurrent(k) => current + 1 + k,
            };
            let lease = Lease {
                epoch: Epoch(epoch),
                holder: node(me),
            };
            let mut plan = Plan::new(format!("claim lease epoch {epoch} (saw {current})"));
            plan.writes
                .push((Reg::Lease, Some(Val::Lease(lease.clone()))));
            plan.event = Event::Claim(lease.clone());
            let result = doc.claim_lease(&lease).map(Some);
            (plan, result)
        }
        Op::Schedule { put, remove } => {
            let put: BTreeMap<SlotId, Assignment> = put
                .iter()
                .map(|(s, n, epoch, generation)| {
                    (
                        slot(*s),
                        Assignment {
                            node: node(usize::from(*n)),
                            epoch: Epoch(*epoch),
                            holder: node(me),
                            spec_generation: *generation,
                            displaced: Vec::new(),
                            gpus: Vec::new(),
                        },
                    )
                })
                .collect();
            let remove: BTreeSet<SlotId> = remove
                .iter()
                .map(|s| slot(*s))
                .filter(|s| !put.contains_key(s))
                .collect();
            let mut plan = Plan::new(format!(
                "schedule put {:?} remove {:?}",
                put.iter()
                    .map(|(s, a)| format!("{s}->{} e{} g{}", a.node, a.epoch, a.spec_generation))
                    .collect::<Vec<_>>(),
                remove.iter().map(ToString::to_string).collect::<Vec<_>>()
            ));
            // Fencing: a put ranked below the assignment standing for its slot on this
            // replica is dropped (DESIGN §5), whatever the causal order.
            let standing = doc.assignments();
            let put: BTreeMap<SlotId, Assignment> = put
                .into_iter()
                .filter(|(s, a)| standing.get(s).is_none_or(|x| a.rank() >= x.rank()))
                .collect();
            // Removing an absent slot is no change; putting always is (a new object).
            plan.must_change = !put.is_empty();
            for (s, a) in &put {
                plan.writes
                    .push((Reg::Slot(s.clone()), Some(Val::Assign(a.clone()))));
            }
            for s in &remove {
                plan.writes.push((Reg::Slot(s.clone()), None));
            }
            let put: Vec<(SlotId, Assignment)> = put.into_iter().collect();
            let remove: Vec<SlotId> = remove.into_iter().collect();
            let result = doc.write_assignments(&put, &remove);
            (plan, result)
        }
        Op::AddMember { id, name, label } => {
            let id = usize::from(*id);
            let member = Member {
                id: node(id),
                name: format!("m{name}"),
                addrs: vec![format!("/ip4/10.0.0.{id}/udp/1/quic-v1/p2p/N{id}")],
                labels: label
                    .map(|l| [("zone".to_string(), format!("z{l}"))].into())
                    .unwrap_or_default(),
                capabilities: Default::default(),
                platform: Default::default(),
                admitted_by: node(me),
                admitted_at: i64::try_from(uid).expect("small uid"),
                state: MemberState::Active,
                availability: Default::default(),
            };
            let mut plan = Plan::new(format!("add member N{id} #{uid}"));
            plan.writes
                .push((Reg::Member(member.id.clone()), Some(Val::Obj(uid))));
            plan.writes.push((
                Reg::MemberAddrs(uid),
                Some(Val::Strings(member.addrs.clone())),
            ));
            plan.event = Event::NewMember(member.clone());
            let result = doc.add_member(&member).map(Some);
            (plan, result)
        }
        Op::SetAddrs { id, addr } => {
            let id = node(usize::from(*id));
            let addrs = vec![format!("/ip4/10.1.0.{addr}/udp/2/quic-v1/p2p/{id}")];
            let mut plan = Plan::new(format!("set addrs of {id} to {addrs:?}"));
            plan.must_change = false;
            match doc.members().get(&id) {
                None => plan.refusal = Some(Refusal::UnknownMember),
                Some(m) => {
                    let target = u64::try_from(m.admitted_at).expect("uid");
                    plan.writes
                        .push((Reg::MemberAddrs(target), Some(Val::Strings(addrs.clone()))));
                }
            }
            let result = doc.set_member_addrs(&id, &addrs).map(Some);
            (plan, result)
        }
        Op::AddToken { id, uses } => {
            let token = TokenRecord {
                id: format!("t{id}"),
                digest: format!("d{uid}"),
                expires_at: 1000,
                uses_left: *uses,
                role: "member".into(),
                created_at: 0,
                labels: Default::default(),
                revoked: false,
                minted_by: String::new(),
            };
            let mut plan = Plan::new(format!("add token t{id} #{uid} uses {uses}"));
            plan.writes
                .push((Reg::Token(token.id.clone()), Some(Val::Obj(uid))));
            plan.writes
                .push((Reg::TokenUses(uid), Some(Val::Num(*uses))));
            plan.event = Event::NewToken(uid, token.clone());
            let result = doc.add_token(&token).map(Some);
            (plan, result)
        }
        Op::Admit { token, member } => {
            let token_id = format!("t{token}");
            let m = usize::from(*member);
            let joined = Member {
                id: node(m),
                name: format!("joined{m}"),
                addrs: vec![],
                labels: BTreeMap::new(),
                capabilities: Default::default(),
                platform: Default::default(),
                admitted_by: node(me),
                admitted_at: i64::try_from(uid).expect("small uid"),
                state: MemberState::Active,
                availability: Default::default(),
            };
            let mut plan = Plan::new(format!("admit N{m} #{uid} with {token_id}"));
            match doc.tokens().get(&token_id) {
                None => plan.refusal = Some(Refusal::UnknownToken),
                Some(t) => {
                    let target = token_uid(t).expect("token tag");
                    plan.writes.push((
                        Reg::TokenUses(target),
                        Some(Val::Num(t.uses_left.saturating_sub(1))),
                    ));
                    plan.writes
                        .push((Reg::Member(joined.id.clone()), Some(Val::Obj(uid))));
                    plan.writes
                        .push((Reg::MemberAddrs(uid), Some(Val::Strings(vec![]))));
                    plan.event = Event::NewMember(joined.clone());
                }
            }
            let result = doc.admit_with_token(&token_id, &joined).map(Some);
            (plan, result)
        }
        Op::CreateJob { id, image } => {
            let id = format!("j{id}");
            let job = Job {
                id: id.clone(),
                spec: JobSpec {
                    image: IMAGES[*image].into(),
                    command: vec!["true".into()],
                    env: [("id".to_string(), tag(uid))].into(),
                },
                priority: 2,
                max_attempts: 3,
                attempts: vec![],
                state: JobState::Pending,
            };
            let mut plan = Plan::new(format!("create job {id} #{uid}"));
            if doc.jobs().contains_key(&id) {
                plan.refusal = Some(Refusal::JobExists);
            }
            plan.writes
                .push((Reg::Job(id.clone()), Some(Val::Obj(uid))));
            plan.writes.push((
                Reg::JobState(uid),
                Some(Val::Text(format!("{:?}", JobState::Pending))),
            ));
            let result = doc
                .create_job(&id, &job.spec, job.priority, job.max_attempts)
                .map(Some);
            plan.event = Event::NewJob(uid, job);
            (plan, result)
        }
        Op::JobAttempt {
            id,
            exit_code,
            state,
        } => {
            let id = format!("j{id}");
            let state = [
                JobState::Pending,
                JobState::Running,
                JobState::Succeeded,
                JobState::Dead,
            ][usize::from(*state) % 4];
            let attempt = JobAttempt {
                number: u32::try_from(uid).expect("small uid"),
                node: node(me),
                started_at: i64::try_from(uid).expect("small uid"),
                exit_code: *exit_code,
            };
            let mut plan = Plan::new(format!("attempt {id} #{uid} -> {state:?}"));
            match doc.jobs().get(&id).and_then(job_uid) {
                None => plan.refusal = Some(Refusal::UnknownJob),
                Some(target) => {
                    plan.what = format!("attempt {id} #{target} ({uid}) -> {state:?}");
                    plan.writes
                        .push((Reg::JobState(target), Some(Val::Text(format!("{state:?}")))));
                    plan.event = Event::Attempt(target, attempt.clone());
                }
            }
            let result = doc.record_job_attempt(&id, &attempt, state).map(Some);
            (plan, result)
        }
        Op::PutSecret { name } => {
            let secret = SecretRecord {
                name: format!("s{name}"),
                version: uid,
                ciphertext: uid.to_le_bytes().to_vec(),
                nonce: vec![7; 24],
                recipients: [(node(me), vec![1, 2, 3])].into(),
            };
            let mut plan = Plan::new(format!("put secret s{name} #{uid}"));
            plan.writes
                .push((Reg::Secret(secret.name.clone()), Some(Val::Obj(uid))));
            let result = doc.put_secret(&secret).map(Some);
            plan.event = Event::NewSecret(uid, secret);
            (plan, result)
        }
        Op::RemoveSecret { name } => {
            let name = format!("s{name}");
            let mut plan = Plan::new(format!("remove secret {name}"));
            if doc.secrets().contains_key(&name) {
                plan.writes.push((Reg::Secret(name.clone()), None));
            } else {
                plan.refusal = Some(Refusal::UnknownSecret);
            }
            let result = doc.remove_secret(&name).map(Some);
            (plan, result)
        }
        Op::PutVolume { name, node: n } => {
            let volume = Volume {
                name: format!("v{name}"),
                driver: "local".into(),
                node: node(usize::from(*n)),
                options: [("id".to_string(), tag(uid))].into(),
            };
            let mut plan = Plan::new(format!("put volume v{name} #{uid} on {}", volume.node));
            plan.writes
                .push((Reg::Volume(volume.name.clone()), Some(Val::Obj(uid))));
            let result = doc.put_volume(&volume).map(Some);
            plan.event = Event::NewVolume(uid, volume);
            (plan, result)
        }
        Op::RemoveVolume { name } => {
            let name = format!("v{name}");
            let mut plan = Plan::new(format!("remove volume {name}"));
            if doc.volumes().contains_key(&name) {
                plan.writes.push((Reg::Volume(name.clone()), None));
            } else {
                plan.refusal = Some(Refusal::UnknownVolume);
            }
            let result = doc.remove_volume(&name).map(Some);
            (plan, result)
        }
    }
}

fn job_uid(job: &Job) -> Option<u64> {
    job.spec.env.get("id")?.strip_prefix('u')?.parse().ok()
}

fn volume_uid(volume: &Volume) -> Option<u64> {
    volume.options.get("id")?.strip_prefix('u')?.parse().ok()
}

fn refusal_of(error: &CrdtError) -> Option<Refusal> {
    match error {
        CrdtError::ServiceExists(_) => Some(Refusal::ServiceExists),
        CrdtError::UnknownService(_) => Some(Refusal::UnknownService),
        CrdtError::UnknownMember(_) => Some(Refusal::UnknownMember),
        CrdtError::UnknownToken(_) => Some(Refusal::UnknownToken),
        CrdtError::JobExists(_) => Some(Refusal::JobExists),
        CrdtError::UnknownJob(_) => Some(Refusal::UnknownJob),
        CrdtError::UnknownSecret(_) => Some(Refusal::UnknownSecret),
        CrdtError::UnknownVolume(_) => Some(Refusal::UnknownVolume),
        _ => None,
    }
}

// ---- the simulation ----------------------------------------------------------------------

/// The typed read-out of a replica.
#[derive(Debug, PartialEq)]
struct Snapshot {
    cluster: Option<ClusterInfo>,
    members: BTreeMap<NodeId, Member>,
    services: BTreeMap<ServiceName, Service>,
    lease: Option<Lease>,
    assignments: BTreeMap<SlotId, Assignment>,
    tokens: BTreeMap<String, TokenRecord>,
    jobs: BTreeMap<String, Job>,
    secrets: BTreeMap<String, SecretRecord>,
    volumes: BTreeMap<String, Volume>,
}

fn snapshot(doc: &DesiredState) -> Snapshot {
    Snapshot {
        cluster: doc.cluster(),
        members: doc.members(),
        services: doc.services(),
        lease: doc.lease(),
        assignments: doc.assignments(),
        tokens: doc.tokens(),
        jobs: doc.jobs(),
        secrets: doc.secrets(),
        volumes: doc.volumes(),
    }
}

fn history_set(doc: &mut DesiredState) -> BTreeSet<String> {
    doc.history().into_iter().map(|e| e.hash).collect()
}

/// A full copy of `doc` (fresh actor id; used only for reading and merging).
fn copy(doc: &mut DesiredState) -> DesiredState {
    DesiredState::load(doc.node().clone(), &doc.save()).expect("load own save")
}

fn pair_mut<T>(items: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    assert!(i < j);
    let (left, right) = items.split_at_mut(j);
    (&mut left[i], &mut right[0])
}

/// Runs the sync protocol over a reliable channel, with fresh states, until neither side has
/// anything to send.
fn sync_clean(a: &mut DesiredState, b: &mut DesiredState) -> TestResult {
    let (mut sa, mut sb) = (SyncState::new(), SyncState::new());
    for _ in 0..64 {
        let m1 = a.generate_sync_message(&mut sa);
        if let Some(m) = &m1 {
            b.receive_sync_message(&mut sb, m)
                .map_err(|e| fail(format!("clean sync: receive failed: {e}")))?;
        }
        let m2 = b.generate_sync_message(&mut sb);
        if let Some(m) = &m2 {
            a.receive_sync_message(&mut sa, m)
                .map_err(|e| fail(format!("clean sync: receive failed: {e}")))?;
        }
        if m1.is_none() && m2.is_none() {
            return Ok(());
        }
    }
    Err(fail("clean sync did not finish in 64 rounds".into()))
}

/// Which groups of checks a test asserts (each group is its own test, so that a failure in
/// one shrinks to its own minimal case and does not hide the others).
#[derive(Clone, Copy, Default)]
struct Checks {
    /// Lease, assignments, members, tokens and service objects against the model.
    merge_rules: bool,
    /// The service life-cycle rules (create survives unless deleted by someone who saw it...).
    lifecycle: bool,
    /// An acknowledged operation that committed nothing returns empty bytes.
    strict_bytes: bool,
}

struct Sim {
    n: usize,
    replicas: Vec<DesiredState>,
    /// `states[i][j]`: replica i's sync state for peer j, kept across conversations.
    states: Vec<Vec<SyncState>>,
    model: Model,
    checks: Checks,
    trace: Vec<String>,
}

impl Sim {
    fn new(n: usize, checks: Checks) -> Self {
        let mut first = DesiredState::new_cluster(&cluster_info(), &founder()).expect("init");
        let saved = first.save();
        let init = first.history();
        assert_eq!(init.len(), 1, "cluster init is one change");
        let mut replicas = vec![first];
        for i in 1..n {
            replicas.push(DesiredState::load(node(i), &saved).expect("load"));
        }
        let mut model = Model {
            next_uid: 1,
            ..Model::default()
        };
        model.made.push(Made {
            hash: init[0].hash.clone(),
            past: BTreeSet::new(),
            bytes: Vec::new(),
            what: "cluster init".into(),
        });
        model
            .writes
            .insert(Reg::Member(node(0)), vec![(0, Some(Val::Obj(0)))]);
        model.writes.insert(
            Reg::MemberAddrs(0),
            vec![(0, Some(Val::Strings(founder().addrs)))],
        );
        model.members.insert(0, founder());
        Sim {
            n,
            replicas,
            states: (0..n)
                .map(|_| (0..n).map(|_| SyncState::new()).collect())
                .collect(),
            model,
            checks,
            trace: Vec::new(),
        }
    }

    fn reset_pair(&mut self, a: usize, b: usize) {
        self.states[a][b] = SyncState::new();
        self.states[b][a] = SyncState::new();
    }

    fn step(&mut self, step: &Step) -> TestResult {
        let n = self.n;
        match step {
            Step::Op { replica, op } => self.apply_op(replica % n, op),
            Step::Exchange {
                from,
                to_offset,
                fates,
            } => {
                let from = from % n;
                let to = (from + 1 + to_offset % (n - 1)) % n;
                self.exchange(from, to, fates)
            }
            Step::Gossip { change, to } => {
                let to = to % n;
                if self.model.made.len() > 1 {
                    let k = 1 + change % (self.model.made.len() - 1);
                    self.trace.push(format!(
                        "gossip change {k} ({}) to N{to}",
                        self.model.made[k].what
                    ));
                    let bytes = self.model.made[k].bytes.clone();
                    self.replicas[to]
                        .apply_change(&bytes)
                        .map_err(|e| fail(format!("gossip to N{to}: apply_change failed: {e}")))?;
                }
                Ok(())
            }
            Step::Restart { replica } => {
                let r = replica % n;
                self.trace.push(format!("restart N{r}"));
                let bytes = self.replicas[r].save();
                self.replicas[r] = DesiredState::load(node(r), &bytes)
                    .map_err(|e| fail(format!("restart N{r}: load failed: {e}")))?;
                for p in 0..n {
                    self.reset_pair(r, p);
                }
                Ok(())
            }
        }
    }

    fn apply_op(&mut self, r: usize, op: &Op) -> TestResult {
        let doc = &mut self.replicas[r];
        let before = doc.history();
        let heads_before = doc.heads();
        let past: BTreeSet<String> = before.iter().map(|e| e.hash.clone()).collect();
        let uid = self.model.next_uid;
        self.model.next_uid += 1;

        let (plan, result) = run_op(doc, r, op, uid);
        let what = format!("N{r}: {}", plan.what);
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("refused: {e}"),
        };
        self.trace.push(format!("{what} -> {outcome}"));

        let after = doc.history();
        prop_assert!(
            after.len() >= before.len() && before.iter().all(|e| after.contains(e)),
            "{what}: history lost entries"
        );
        let new: Vec<_> = after.iter().filter(|e| !past.contains(&e.hash)).collect();
        let bytes = match result {
            Ok(bytes) => {
                prop_assert!(
                    plan.refusal.is_none(),
                    "{what}: succeeded, but the replica's view says {:?}",
                    plan.refusal
                );
                bytes.unwrap_or_default()
            }
            Err(e) => {
                let refusal = refusal_of(&e);
                prop_assert!(
                    refusal.is_some() && refusal == plan.refusal,
                    "{what}: failed with {e}, the replica's view says {:?}",
                    plan.refusal
                );
                prop_assert!(
                    new.is_empty() && doc.heads() == heads_before,
                    "{what}: a refused operation changed the document"
                );
                return Ok(());
            }
        };
        let entry = match new.as_slice() {
            [] => {
                prop_assert!(
                    !plan.must_change,
                    "{what}: acknowledged but committed nothing"
                );
                if self.checks.strict_bytes {
                    prop_assert!(
                        bytes.is_empty(),
                        "{what}: committed nothing but returned {} bytes of change {:?} \
                         (an earlier change)",
                        bytes.len(),
                        change_hash(&bytes)
                    );
                }
                return Ok(());
            }
            [entry] => (*entry).clone(),
            _ => {
                return Err(fail(format!(
                    "{what}: one operation made {} changes",
                    new.len()
                )))
            }
        };
        // (The author named by `entry.node` is checked by `history_names_every_author`: it
        // depends on the random actor suffix, which proptest does not control.)
        prop_assert!(
            !entry.message.is_empty(),
            "{what}: change without a message"
        );
        prop_assert_eq!(
            doc.heads(),
            vec![entry.hash.clone()],
            "{}: a local change must be the only head",
            what
        );
        prop_assert_eq!(
            change_hash(&bytes),
            Some(entry.hash.clone()),
            "{}: the returned bytes are not the committed change",
            what
        );

        let index = self.model.made.len();
        self.model.made.push(Made {
            hash: entry.hash,
            past,
            bytes,
            what,
        });
        for (reg, value) in plan.writes {
            self.model
                .writes
                .entry(reg)
                .or_default()
                .push((index, value));
        }
        match plan.event {
            Event::None => {}
            Event::Create(n) => self.model.creates.push((index, n)),
            Event::Delete(n) => self.model.deletes.push((index, n)),
            Event::Claim(l) => self.model.claims.push((index, l)),
            Event::NewMember(m) => {
                self.model.members.insert(m.admitted_at, m);
            }
            Event::NewToken(uid, t) => {
                self.model.tokens.insert(uid, t);
            }
            Event::NewJob(uid, j) => {
                self.model.jobs.insert(uid, j);
            }
            Event::Attempt(target, a) => {
                self.model.attempts.entry(target).or_default().push(a);
            }
            Event::NewSecret(uid, secret) => {
                self.model.secrets.insert(uid, secret);
            }
            Event::NewVolume(uid, v) => {
                self.model.volumes.insert(uid, v);
            }
        }
        Ok(())
    }

    /// One conversation over a lossy channel. The sync protocol assumes a reliable, in-order
    /// channel: its state records what was sent as if delivered (`sent_hashes`, in-flight
    /// flag), so after a lost message neither side would ever resend those changes. The
    /// standard recovery, and what a node does when a connection breaks, is to start both
    /// sides of the pair from fresh states; so a drop resets the pair and the conversation
    /// goes on. A duplicate is delivered twice as is: receiving must tolerate it.
    fn exchange(&mut self, from: usize, to: usize, fates: &[Fate]) -> TestResult {
        let (mut sender, mut receiver) = (from, to);
        let mut idle = 0;
        let mut log = Vec::new();
        for fate in fates {
            let message =
                self.replicas[sender].generate_sync_message(&mut self.states[sender][receiver]);
            match message {
                None => {
                    idle += 1;
                    if idle == 2 {
                        break;
                    }
                }
                Some(m) => {
                    idle = 0;
                    log.push(format!("{sender}>{receiver}:{fate:?}"));
                    let deliveries = match fate {
                        Fate::Deliver => 1,
                        Fate::Duplicate => 2,
                        Fate::Drop => {
                            self.reset_pair(from, to);
                            0
                        }
                    };
                    for _ in 0..deliveries {
                        self.replicas[receiver]
                            .receive_sync_message(&mut self.states[receiver][sender], &m)
                            .map_err(|e| {
                                fail(format!("N{receiver} could not receive from N{sender}: {e}"))
                            })?;
                    }
                }
            }
            std::mem::swap(&mut sender, &mut receiver);
        }
        self.trace
            .push(format!("exchange N{from}<->N{to} [{}]", log.join(" ")));
        Ok(())
    }

    /// Every pair syncs cleanly with fresh states, round after round, until no heads change.
    fn heal(&mut self) -> TestResult {
        for _ in 0..self.n + 3 {
            let mut changed = false;
            for i in 0..self.n {
                for j in i + 1..self.n {
                    let (a, b) = pair_mut(&mut self.replicas, i, j);
                    let before = (a.heads(), b.heads());
                    sync_clean(a, b)?;
                    let after = (a.heads(), b.heads());
                    prop_assert_eq!(
                        &after.0,
                        &after.1,
                        "N{} and N{} differ right after a clean sync",
                        i,
                        j
                    );
                    changed |= before != after;
                }
            }
            if !changed {
                return Ok(());
            }
        }
        Err(fail(
            "pairwise sync still changes replicas after n+3 rounds".into(),
        ))
    }

    /// Convergence and durability of acknowledged changes; returns the common read-out.
    fn check_converged(&mut self) -> TestResult<Snapshot> {
        let heads = self.replicas[0].heads();
        let history = history_set(&mut self.replicas[0]);
        let snap = snapshot(&self.replicas[0]);
        for i in 1..self.n {
            prop_assert_eq!(&self.replicas[i].heads(), &heads, "heads of N{}", i);
            prop_assert_eq!(
                &history_set(&mut self.replicas[i]),
                &history,
                "history of N{}",
                i
            );
            prop_assert_eq!(&snapshot(&self.replicas[i]), &snap, "read-out of N{}", i);
        }
        for made in &self.model.made {
            prop_assert!(
                history.contains(&made.hash),
                "acknowledged change lost: {}",
                made.what
            );
        }
        prop_assert_eq!(&snap.cluster, &Some(cluster_info()));
        let mut reloaded = copy(&mut self.replicas[0]);
        prop_assert_eq!(&reloaded.heads(), &heads, "heads after save/load");
        prop_assert_eq!(&snapshot(&reloaded), &snap, "read-out after save/load");
        Ok(snap)
    }

    fn check_merge_rules(&self, snap: &Snapshot) -> TestResult {
        let m = &self.model;

        // Lease: the greatest (epoch, holder) among surviving claims, exactly.
        let expected = m
            .surviving(&Reg::Lease)
            .into_iter()
            .filter_map(|v| match v {
                Val::Lease(l) => Some(l.clone()),
                _ => None,
            })
            .max();
        prop_assert_eq!(&snap.lease, &expected, "lease");
        // DESIGN §3 in its usual form: when every claim was fenced (its epoch above every claim
        // its author had seen), the greatest claim of the whole run stands.
        let fenced = m.claims.iter().all(|(c, l)| {
            m.claims
                .iter()
                .all(|(o, earlier)| !m.precedes(*o, *c) || earlier.epoch < l.epoch)
        });
        if fenced {
            let greatest = m.claims.iter().map(|(_, l)| l.clone()).max();
            prop_assert_eq!(&snap.lease, &greatest, "lease with fenced claims");
        }

        // Assignments: per slot, the greatest (epoch, holder) among surviving writes; none when
        // every write was removed by someone who had seen it.
        let mut expected = BTreeMap::new();
        for i in 0..SLOTS.len() {
            let s = slot(u8::try_from(i).expect("small"));
            let best = m
                .surviving(&Reg::Slot(s.clone()))
                .into_iter()
                .filter_map(|v| match v {
                    Val::Assign(a) => Some(a.clone()),
                    _ => None,
                })
                .max_by(|a, b| a.rank().cmp(&b.rank()));
            if let Some(a) = best {
                expected.insert(s, a);
            }
        }
        prop_assert_eq!(&snap.assignments, &expected, "assignments");

        // Members: one of the surviving admissions, with that admission's fields.
        let ids: BTreeSet<NodeId> = m
            .writes
            .keys()
            .filter_map(|r| match r {
                Reg::Member(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        prop_assert_eq!(
            &snap.members.keys().cloned().collect::<BTreeSet<_>>(),
            &ids,
            "member ids"
        );
        for (id, member) in &snap.members {
            let uid = u64::try_from(member.admitted_at).expect("uid");
            m.check_lww(Reg::Member(id.clone()), Some(Val::Obj(uid)))?;
            let written = m.members.get(&member.admitted_at).expect("written member");
            prop_assert_eq!(
                &Member {
                    addrs: member.addrs.clone(),
                    ..written.clone()
                },
                member,
                "member fields"
            );
            m.check_lww(
                Reg::MemberAddrs(uid),
                Some(Val::Strings(member.addrs.clone())),
            )?;
        }

        // Tokens: one of the surviving records, uses_left one of its surviving values.
        let ids: BTreeSet<String> = m
            .writes
            .keys()
            .filter_map(|r| match r {
                Reg::Token(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        prop_assert_eq!(
            &snap.tokens.keys().cloned().collect::<BTreeSet<_>>(),
            &ids,
            "token ids"
        );
        for (id, token) in &snap.tokens {
            let uid = token_uid(token).expect("token tag");
            m.check_lww(Reg::Token(id.clone()), Some(Val::Obj(uid)))?;
            let written = m.tokens.get(&uid).expect("written token");
            prop_assert_eq!(
                &TokenRecord {
                    uses_left: token.uses_left,
                    ..written.clone()
                },
                token,
                "token fields"
            );
            m.check_lww(Reg::TokenUses(uid), Some(Val::Num(token.uses_left)))?;
        }

        // Jobs: one of the surviving creations, as created, with every attempt acknowledged on
        // that object (concurrent appends all survive) and a surviving state.
        prop_assert_eq!(
            snap.jobs.keys().cloned().collect::<BTreeSet<_>>(),
            m.keys_with_values(|r| match r {
                Reg::Job(id) => Some(id.clone()),
                _ => None,
            }),
            "job ids"
        );
        for (id, job) in &snap.jobs {
            let uid = job_uid(job).expect("job tag");
            m.check_lww(Reg::Job(id.clone()), Some(Val::Obj(uid)))?;
            m.check_lww(
                Reg::JobState(uid),
                Some(Val::Text(format!("{:?}", job.state))),
            )?;
            let mut attempts = job.attempts.clone();
            attempts.sort_by_key(|a| a.started_at);
            let written = m.jobs.get(&uid).expect("written job");
            prop_assert_eq!(
                &Job {
                    attempts,
                    state: job.state,
                    ..written.clone()
                },
                &Job {
                    attempts: m.attempts.get(&uid).cloned().unwrap_or_default(),
                    state: job.state,
                    ..written.clone()
                },
                "job {}",
                id
            );
        }

        // Secrets and volumes: present iff a put survives (a remove deletes only what its
        // author had seen); then one of the surviving records, exactly as written.
        prop_assert_eq!(
            snap.secrets.keys().cloned().collect::<BTreeSet<_>>(),
            m.keys_with_values(|r| match r {
                Reg::Secret(name) => Some(name.clone()),
                _ => None,
            }),
            "secret names"
        );
        for (name, secret) in &snap.secrets {
            m.check_lww(Reg::Secret(name.clone()), Some(Val::Obj(secret.version)))?;
            prop_assert_eq!(
                Some(secret),
                m.secrets.get(&secret.version),
                "secret {}",
                name
            );
        }
        prop_assert_eq!(
            snap.volumes.keys().cloned().collect::<BTreeSet<_>>(),
            m.keys_with_values(|r| match r {
                Reg::Volume(name) => Some(name.clone()),
                _ => None,
            }),
            "volume names"
        );
        for (name, volume) in &snap.volumes {
            let uid = volume_uid(volume).expect("volume tag");
            m.check_lww(Reg::Volume(name.clone()), Some(Val::Obj(uid)))?;
            prop_assert_eq!(Some(volume), m.volumes.get(&uid), "volume {}", name);
        }

        // Services: the object that stands is one of the surviving (re-)creations, and its
        // fields hold surviving values. Its tombstone: set if a delete targeted that very object
        // (the one its author saw standing), and set only if some delete had seen the object.
        // Generation: a tombstoned object that stands has the greatest generation of all
        // survivors; a live one the greatest among survivors that no delete had seen (which
        // are surely live). (Which of live and tombstoned objects stands is the life-cycle
        // test's business.)
        for i in 0..NAMES.len() {
            let name = service_name(i);
            let survivors: Vec<u64> = m
                .surviving(&Reg::Service(name.clone()))
                .into_iter()
                .filter_map(|v| match v {
                    Val::Obj(uid) => Some(*uid),
                    _ => None,
                })
                .collect();
            let Some(service) = snap.services.get(&name) else {
                prop_assert!(survivors.is_empty(), "service {name} missing");
                continue;
            };
            let uid = service_uid(service).expect("service tag");
            prop_assert!(
                survivors.contains(&uid),
                "service {name} reads object #{uid}, survivors are {survivors:?}"
            );
            let field = |f| Reg::Field(uid, f);
            // The generation rule of concurrent updates: one surviving value reads as itself,
            // several (updates on two sides) as one past the greatest. Every generation write
            // is a real op (an update writes one past what its replica read, never the value
            // held), so the model's surviving set is the document's.
            let generations: Vec<u64> = m
                .surviving(&field(GENERATION))
                .into_iter()
                .filter_map(|v| match v {
                    Val::Num(g) => Some(*g),
                    _ => None,
                })
                .collect();
            let greatest = generations.iter().copied().max().unwrap_or_default();
            let expected = if generations.len() > 1 {
                greatest + 1
            } else {
                greatest
            };
            prop_assert_eq!(
                service.generation,
                expected,
                "service {}: surviving generations {:?}",
                name,
                generations
            );
            let targeted = |uid: u64| {
                m.writes
                    .get(&Reg::Field(uid, DELETED))
                    .is_some_and(|w| w.iter().any(|(_, v)| *v == Some(Val::Bool(true))))
            };
            let seen_by_delete = |uid: u64| {
                let created = m.writes[&Reg::Service(name.clone())]
                    .iter()
                    .find(|(_, v)| *v == Some(Val::Obj(uid)))
                    .map(|(c, _)| *c)
                    .expect("survivors were created");
                m.deletes
                    .iter()
                    .any(|(d, n)| *n == name && m.precedes(created, *d))
            };
            if targeted(uid) {
                prop_assert!(service.deleted, "service {name}: #{uid} lost its tombstone");
            }
            if service.deleted {
                prop_assert!(
                    seen_by_delete(uid),
                    "service {name}: #{uid} is tombstoned, but no delete had seen it"
                );
            }
            m.check_lww(field(IMAGE), Some(Val::Text(service.spec.image.clone())))?;
            m.check_lww(
                field(REPLICAS),
                Some(Val::Num(u64::from(service.spec.replicas))),
            )?;
            m.check_lww(
                field(COMMAND),
                Some(Val::Strings(service.spec.command.clone())),
            )?;
            m.check_lww(
                field(PREVIOUS),
                service.previous_spec.clone().map(Val::Spec),
            )?;
            for (k, f) in ENV_KEYS.iter().zip(ENV_FIELDS) {
                m.check_lww(field(f), service.spec.env.get(*k).cloned().map(Val::Text))?;
            }
            prop_assert!(
                service
                    .spec
                    .env
                    .keys()
                    .all(|k| k == "id" || ENV_KEYS.contains(&k.as_str())),
                "service {name}: unexpected env {:?}",
                service.spec.env
            );
            prop_assert!(service.spec.ports.is_empty(), "service {name}: ports");
            for other in survivors
                .iter()
                .filter(|o| **o != uid && (service.deleted || !seen_by_delete(**o)))
            {
                let lowest = m
                    .surviving(&Reg::Field(*other, GENERATION))
                    .into_iter()
                    .filter_map(|v| match v {
                        Val::Num(g) => Some(*g),
                        _ => None,
                    })
                    .min()
                    .expect("a created object has a generation");
                prop_assert!(
                    lowest <= service.generation,
                    "service {name}: object #{uid} (generation {}) stands over #{other} \
                     (generation at least {lowest})",
                    service.generation
                );
            }
        }
        Ok(())
    }

    fn check_lifecycle(&self, snap: &Snapshot) -> TestResult {
        let m = &self.model;
        for i in 0..NAMES.len() {
            let name = service_name(i);
            let live = snap.services.get(&name).is_some_and(|s| !s.deleted);
            let creates: Vec<usize> = m
                .creates
                .iter()
                .filter(|(_, n)| *n == name)
                .map(|(c, _)| *c)
                .collect();
            let deletes: Vec<usize> = m
                .deletes
                .iter()
                .filter(|(_, n)| *n == name)
                .map(|(d, _)| *d)
                .collect();
            for c in &creates {
                if !deletes.iter().any(|d| m.precedes(*c, *d)) {
                    prop_assert!(
                        live,
                        "acknowledged `{}` was deleted by no one who had seen it, yet {name} \
                         is not live at the end",
                        m.made[*c].what
                    );
                }
            }
            for d in &deletes {
                if creates.iter().all(|c| m.precedes(*c, *d)) {
                    prop_assert!(
                        !live,
                        "acknowledged `{}` had seen every create of {name}, yet it is live \
                         at the end",
                        m.made[*d].what
                    );
                }
            }
        }
        Ok(())
    }
}

/// Plays `steps` on `n` replicas, heals, and runs the checks.
fn run_scenario(n: usize, steps: &[Step], checks: Checks) -> TestResult {
    let mut sim = Sim::new(n, checks);
    let result: TestResult = (|| {
        for s in steps {
            sim.step(s)?;
        }
        sim.heal()?;
        let snap = sim.check_converged()?;
        if checks.merge_rules {
            sim.check_merge_rules(&snap)?;
        }
        if checks.lifecycle {
            sim.check_lifecycle(&snap)?;
        }
        Ok(())
    })();
    result.map_err(|e| {
        fail(format!(
            "{e}\nreplicas: {n}\ntrace:\n  {}",
            sim.trace.join("\n  ")
        ))
    })
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Step>)> {
    (2..=7usize, vec(step(), 0..60))
}

// ---- merge laws --------------------------------------------------------------------------

/// `a ⊔ b`: a copy of `a` after a full clean sync with a copy of `b` (which must then agree).
fn merge(a: &mut DesiredState, b: &mut DesiredState) -> TestResult<DesiredState> {
    let (mut x, mut y) = (copy(a), copy(b));
    sync_clean(&mut x, &mut y)?;
    prop_assert_eq!(x.heads(), y.heads(), "the two sides of a merge differ");
    Ok(x)
}

fn view(doc: &mut DesiredState) -> (Vec<String>, Snapshot) {
    (doc.heads(), snapshot(doc))
}

fn merge_laws(steps: &[Step]) -> TestResult {
    let mut sim = Sim::new(3, Checks::default());
    for s in steps {
        sim.step(s)?;
    }
    let [a, b, c] = &mut sim.replicas[..] else {
        unreachable!("three replicas");
    };
    let mut ab = merge(a, b)?;
    let mut ba = merge(b, a)?;
    prop_assert_eq!(view(&mut ab), view(&mut ba), "a⊔b == b⊔a");

    let mut ab_c = merge(&mut ab, c)?;
    let mut bc = merge(b, c)?;
    let mut a_bc = merge(a, &mut bc)?;
    prop_assert_eq!(view(&mut ab_c), view(&mut a_bc), "(a⊔b)⊔c == a⊔(b⊔c)");

    let mut a_copy = copy(a);
    let mut aa = merge(a, &mut a_copy)?;
    prop_assert_eq!(view(&mut aa), view(a), "a⊔a == a");
    let mut ab_b = merge(&mut ab, b)?;
    prop_assert_eq!(view(&mut ab_b), view(&mut ab), "(a⊔b)⊔b == a⊔b");
    Ok(())
}

// ---- the tests -----------------------------------------------------------------------------

// Case counts: about 80 ms per multi-replica case in a debug build; the file stays well under
// a minute on two cores. `PROPTEST_CASES=N` overrides all of them (see the file's docs).

proptest! {
    #![proptest_config(config(192))]

    /// Lossy sync, gossip and restarts always converge, lose no acknowledged change, and the
    /// result obeys the merge rules exactly as the causal model predicts.
    #[test]
    fn replicas_converge_and_obey_the_merge_rules((n, steps) in scenario()) {
        let checks = Checks { merge_rules: true, ..Checks::default() };
        run_scenario(n, &steps, checks)?;
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// A service created by an acknowledged operation stays live unless someone who had seen
    /// that create deleted it; a delete that had seen every create of the name sticks.
    #[test]
    fn service_create_and_delete_survive_concurrency((n, steps) in scenario()) {
        let checks = Checks { lifecycle: true, ..Checks::default() };
        run_scenario(n, &steps, checks)?;
    }

    /// `ChangeBytes` is empty when the operation changed nothing (never an earlier change).
    #[test]
    fn operations_return_only_their_own_change(
        (n, steps) in (2..=3usize, vec(step(), 0..30)),
    ) {
        let checks = Checks { strict_bytes: true, ..Checks::default() };
        run_scenario(n, &steps, checks)?;
    }

    /// Merge by full sync is commutative, associative and idempotent in heads and read-out.
    #[test]
    fn merge_is_commutative_associative_idempotent(steps in vec(step(), 0..40)) {
        merge_laws(&steps)?;
    }
}

/// `history()` names the node of every change. The actor id is the node id, `#`, and 8 random
/// bytes; about 3% of suffixes contain a `#` byte themselves (1 - (255/256)^8), so a thousand
/// fresh actors are all but certain to include such a suffix.
#[test]
fn history_names_every_author() {
    let info = cluster_info();
    let mut founder_doc = DesiredState::new_cluster(&info, &founder()).expect("init");
    let saved = founder_doc.save();
    let mut wrong = Vec::new();
    for i in 0..1000 {
        let id = NodeId(format!("12D3KooWnode{i}"));
        let mut doc = DesiredState::load(id.clone(), &saved).expect("load");
        doc.claim_lease(&Lease {
            epoch: Epoch(1),
            holder: id.clone(),
        })
        .expect("claim");
        let last = doc.history().pop().expect("a change");
        if last.node.as_ref() != Some(&id) {
            wrong.push((id, last.node));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 1000 changes name the wrong author, e.g. {:?}",
        wrong.len(),
        wrong.first()
    );
}

// ---- the minimal cases of what the properties found ----------------------------------------

fn two_replicas() -> (DesiredState, DesiredState) {
    let mut a = DesiredState::new_cluster(&cluster_info(), &founder()).expect("init");
    let b = DesiredState::load(node(1), &a.save()).expect("load");
    (a, b)
}

fn spec_with_image(image: &str) -> ServiceSpec {
    ServiceSpec {
        image: image.into(),
        ..base_spec()
    }
}

/// An operation that writes nothing must not hand back an earlier change as its own.
#[test]
fn an_operation_that_changes_nothing_returns_no_bytes() {
    let (mut a, _) = two_replicas();
    let web = service_name(0);
    let created = a.create_service(&web, &base_spec()).expect("create");
    let same = a.scale_service(&web, base_spec().replicas).expect("scale");
    assert!(
        same.is_empty(),
        "scale to the current count committed nothing but returned {} bytes (the create's: {})",
        same.len(),
        same == created
    );
    let removed = a
        .write_assignments(&[], &[slot(0)])
        .expect("remove")
        .unwrap_or_default();
    assert!(
        removed.is_empty(),
        "removing an absent slot committed nothing but returned {} bytes",
        removed.len()
    );
}

/// A creates `a`, updates it (generation 2) and deletes it; B, never having seen any of it,
/// creates `a` (generation 1). B's create was acknowledged and nobody who saw it deleted it,
/// yet after the merge the tombstoned generation-2 object stands and `a` is gone.
#[test]
fn a_create_survives_a_concurrent_delete_of_another_object() {
    let (mut a, mut b) = two_replicas();
    let name = service_name(0);
    a.create_service(&name, &spec_with_image("img0"))
        .expect("create");
    a.update_service(&name, &spec_with_image("img1"))
        .expect("update");
    a.delete_service(&name).expect("delete");
    b.create_service(&name, &spec_with_image("img2"))
        .expect("create");
    sync_clean(&mut a, &mut b).expect("sync");
    assert_eq!(a.heads(), b.heads());
    assert_eq!(
        b.service(&name).map(|s| s.spec.image),
        Some("img2".to_string()),
        "B's acknowledged create was lost"
    );
}

/// A and B create `a` concurrently; A sees both and deletes `a`, while C, which has seen only
/// B's object, updates it twice (generation 3). Delete wins over a concurrent update, yet after
/// the merge B's object (never tombstoned, higher generation) stands and `a` is live again.
#[test]
fn a_delete_that_saw_every_create_wins_over_a_concurrent_update() {
    let (mut a, mut b) = two_replicas();
    let mut c = DesiredState::load(node(2), &a.save()).expect("load");
    let name = service_name(0);
    a.create_service(&name, &spec_with_image("img0"))
        .expect("create");
    a.update_service(&name, &spec_with_image("img1"))
        .expect("update");
    b.create_service(&name, &spec_with_image("img0"))
        .expect("create");
    sync_clean(&mut b, &mut c).expect("sync");
    c.update_service(&name, &spec_with_image("img1"))
        .expect("update");
    c.update_service(&name, &spec_with_image("img2"))
        .expect("update");
    sync_clean(&mut a, &mut b).expect("sync");
    a.delete_service(&name).expect("delete");
    sync_clean(&mut a, &mut c).expect("sync");
    sync_clean(&mut b, &mut c).expect("sync");
    assert_eq!(a.heads(), b.heads());
    assert_eq!(a.heads(), c.heads());
    assert_eq!(
        a.service(&name).map(|s| s.spec.image),
        None,
        "A's delete, which had seen every create of the name, lost to a concurrent update"
    );
}
