//! The desired-state document: typed reads and named writes over one Automerge document.

use std::collections::BTreeMap;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, Change, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};

use crate::model::{
    Assignment, ClusterInfo, Epoch, HistoryEntry, Lease, Member, MemberState, NodeId, PortSpec,
    Service, ServiceName, ServiceSpec, SlotId, TokenRecord,
};
use crate::CrdtError;

const CLUSTER: &str = "cluster";
const MEMBERS: &str = "members";
const SERVICES: &str = "services";
const ASSIGNMENTS: &str = "assignments";
const LEASE: &str = "lease";
const TOKENS: &str = "tokens";

/// Separates the node id from the per-start random suffix in an actor id.
const ACTOR_SEPARATOR: u8 = b'#';

/// Per-peer state of the Automerge sync protocol (what we know the peer has).
///
/// Keep one per remote peer for the life of a connection; a fresh one is always safe
/// (the protocol then re-discovers what the peer has, at the cost of one more round trip).
#[derive(Debug, Default)]
pub struct SyncState(sync::State);

impl SyncState {
    /// A state for a peer we know nothing about.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Change bytes of one local write, ready to gossip. Apply with [`DesiredState::apply_change`].
pub type ChangeBytes = Vec<u8>;

/// One cluster's desired state: an Automerge document with a typed API.
///
/// Every write is one Automerge change committed with a message (`service create web`) and the
/// author's wall-clock time; [`DesiredState::history`] reads them back as the audit trail.
/// Writes return the change's bytes so the caller can gossip them.
pub struct DesiredState {
    doc: AutoCommit,
    node: NodeId,
    clock: fn() -> i64,
}

impl std::fmt::Debug for DesiredState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesiredState")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn system_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Actor id = node id text, `#`, 8 random bytes: history still names the node, and a node that
/// crashed after gossiping an unpersisted change never reuses its (actor, seq) (DESIGN §3).
fn actor_for(node: &NodeId) -> ActorId {
    let mut bytes = node.as_str().as_bytes().to_vec();
    bytes.push(ACTOR_SEPARATOR);
    bytes.extend_from_slice(&rand::random::<[u8; 8]>());
    ActorId::from(bytes)
}

fn node_of_actor(actor: &ActorId) -> Option<NodeId> {
    let bytes = actor.to_bytes();
    let end = bytes.iter().rposition(|b| *b == ACTOR_SEPARATOR)?;
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    Some(NodeId(text.to_string()))
}

impl DesiredState {
    /// A new cluster's document, written by `node`: the cluster record and `node` as first member.
    pub fn new_cluster(info: &ClusterInfo, founder: &Member) -> Result<Self, CrdtError> {
        let mut state = Self::empty(founder.id.clone());
        let obj = state.doc.put_object(ROOT, CLUSTER, ObjType::Map)?;
        state.doc.put(&obj, "id", info.id.as_str())?;
        state.doc.put(&obj, "name", info.name.as_str())?;
        state.doc.put(&obj, "created_at", info.created_at)?;
        // Every top-level map is made once, here: two replicas that each created a missing map
        // concurrently would hold two conflicting maps, and one side's entries would vanish.
        for key in [MEMBERS, SERVICES, ASSIGNMENTS, TOKENS] {
            state.doc.put_object(ROOT, key, ObjType::Map)?;
        }
        state.write_member(founder)?;
        state.commit(format!("cluster init {}", info.name));
        Ok(state)
    }

    /// An empty document owned by `node` (a joining node before it receives the cluster's).
    pub fn empty(node: NodeId) -> Self {
        let doc = AutoCommit::new().with_actor(actor_for(&node));
        Self {
            doc,
            node,
            clock: system_clock_ms,
        }
    }

    /// Loads a document saved with [`DesiredState::save`] (optionally followed by incremental
    /// chunks) and continues it as `node` with a fresh actor id.
    ///
    /// Errors: [`CrdtError::Automerge`] when the bytes are not a valid document.
    pub fn load(node: NodeId, bytes: &[u8]) -> Result<Self, CrdtError> {
        let doc = AutoCommit::load(bytes)?.with_actor(actor_for(&node));
        Ok(Self {
            doc,
            node,
            clock: system_clock_ms,
        })
    }

    /// Replaces the wall clock used to time-stamp changes (milliseconds since the Unix epoch).
    /// Simulations pass a virtual clock.
    pub fn set_clock(&mut self, clock: fn() -> i64) {
        self.clock = clock;
    }

    /// The node this replica writes as.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Appends incremental bytes (a change chunk or a whole saved document) from storage.
    ///
    /// Errors: [`CrdtError::Automerge`] when the chunk is corrupt.
    pub fn load_incremental(&mut self, bytes: &[u8]) -> Result<(), CrdtError> {
        self.doc.load_incremental(bytes)?;
        Ok(())
    }

    fn commit(&mut self, message: String) -> ChangeBytes {
        let time = (self.clock)();
        self.doc.commit_with(
            CommitOptions::default()
                .with_message(message)
                .with_time(time),
        );
        self.doc
            .get_last_local_change()
            .map(|c| c.raw_bytes().to_vec())
            .unwrap_or_default()
    }

    // ---- sync and persistence ----------------------------------------------------------

    /// Applies one change received by gossip. Changes whose dependencies are missing are held
    /// by Automerge until they arrive (anti-entropy fills the gap).
    ///
    /// Errors: [`CrdtError::Decode`] for bytes that are not a change.
    pub fn apply_change(&mut self, bytes: &[u8]) -> Result<(), CrdtError> {
        let change =
            Change::from_bytes(bytes.to_vec()).map_err(|e| CrdtError::Decode(e.to_string()))?;
        self.doc.apply_changes([change])?;
        Ok(())
    }

    /// The next message of the sync protocol for the peer behind `state`, or `None` when it has
    /// nothing to send (in sync, or waiting for the peer's answer).
    pub fn generate_sync_message(&mut self, state: &mut SyncState) -> Option<Vec<u8>> {
        self.doc
            .sync()
            .generate_sync_message(&mut state.0)
            .map(|m| m.encode())
    }

    /// Receives one sync-protocol message from the peer behind `state`.
    ///
    /// Errors: [`CrdtError::Decode`] for malformed bytes, [`CrdtError::Automerge`] for bad changes.
    pub fn receive_sync_message(
        &mut self,
        state: &mut SyncState,
        bytes: &[u8],
    ) -> Result<(), CrdtError> {
        let message = sync::Message::decode(bytes).map_err(|e| CrdtError::Decode(e.to_string()))?;
        self.doc
            .sync()
            .receive_sync_message(&mut state.0, message)?;
        Ok(())
    }

    /// The whole document, compacted.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// Everything since the last `save` or `save_incremental`: what storage must append.
    pub fn save_incremental(&mut self) -> Vec<u8> {
        self.doc.save_incremental()
    }

    /// Hex hashes of the document's heads, sorted: equal on two replicas iff they hold the same
    /// changes.
    pub fn heads(&mut self) -> Vec<String> {
        let mut heads: Vec<String> = self.doc.get_heads().iter().map(|h| h.to_string()).collect();
        heads.sort();
        heads
    }

    /// The audit trail: every change with its author node, time and message, oldest first.
    pub fn history(&mut self) -> Vec<HistoryEntry> {
        self.doc
            .get_changes(&[])
            .into_iter()
            .map(|c| HistoryEntry {
                hash: c.hash().to_string(),
                node: node_of_actor(c.actor_id()),
                time: c.timestamp(),
                message: c.message().map(str::to_string).unwrap_or_default(),
            })
            .collect()
    }

    // ---- reads ---------------------------------------------------------------------------

    fn map(&self, parent: &ObjId, key: &str) -> Option<ObjId> {
        match self.doc.get(parent, key) {
            Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
            _ => None,
        }
    }

    fn scalar(&self, obj: &ObjId, key: &str) -> Option<ScalarValue> {
        match self.doc.get(obj, key) {
            Ok(Some((Value::Scalar(s), _))) => Some(s.into_owned()),
            _ => None,
        }
    }

    fn string(&self, obj: &ObjId, key: &str) -> Option<String> {
        self.scalar(obj, key)
            .and_then(|s| s.as_str().map(str::to_string))
    }

    fn uint(&self, obj: &ObjId, key: &str) -> Option<u64> {
        match self.scalar(obj, key)? {
            ScalarValue::Uint(v) => Some(v),
            ScalarValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    fn int(&self, obj: &ObjId, key: &str) -> Option<i64> {
        match self.scalar(obj, key)? {
            ScalarValue::Int(v) | ScalarValue::Timestamp(v) => Some(v),
            ScalarValue::Uint(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    fn boolean(&self, obj: &ObjId, key: &str) -> Option<bool> {
        self.scalar(obj, key).and_then(|s| s.as_bool())
    }

    fn string_map(&self, obj: &ObjId, key: &str) -> BTreeMap<String, String> {
        let Some(map) = self.map(obj, key) else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&map)
            .filter_map(|k| self.string(&map, &k).map(|v| (k, v)))
            .collect()
    }

    fn json<T: serde::de::DeserializeOwned + Default>(&self, obj: &ObjId, key: &str) -> T {
        self.string(obj, key)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    /// All map objects stored at `parent.key`, conflicts included (concurrent `put_object`s).
    fn all_maps(&self, parent: &ObjId, key: &str) -> Vec<ObjId> {
        self.doc
            .get_all(parent, key)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(v, id)| matches!(v, Value::Object(ObjType::Map)).then_some(id))
            .collect()
    }

    /// The cluster record; `None` in an empty document.
    pub fn cluster(&self) -> Option<ClusterInfo> {
        let obj = self.map(&ROOT, CLUSTER)?;
        Some(ClusterInfo {
            id: self.string(&obj, "id")?,
            name: self.string(&obj, "name").unwrap_or_default(),
            created_at: self.int(&obj, "created_at").unwrap_or_default(),
        })
    }

    /// Every member, by id.
    pub fn members(&self) -> BTreeMap<NodeId, Member> {
        let Some(members) = self.map(&ROOT, MEMBERS) else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&members)
            .filter_map(|id| {
                let obj = self.map(&members, &id)?;
                let id = NodeId(id);
                Some((
                    id.clone(),
                    Member {
                        id,
                        name: self.string(&obj, "name").unwrap_or_default(),
                        addrs: self.json(&obj, "addrs"),
                        labels: self.string_map(&obj, "labels"),
                        admitted_by: NodeId(self.string(&obj, "admitted_by").unwrap_or_default()),
                        admitted_at: self.int(&obj, "admitted_at").unwrap_or_default(),
                        state: MemberState::parse(&self.string(&obj, "state").unwrap_or_default()),
                    },
                ))
            })
            .collect()
    }

    /// Every service, tombstones included (check [`Service::deleted`]).
    pub fn services(&self) -> BTreeMap<ServiceName, Service> {
        let Some(services) = self.map(&ROOT, SERVICES) else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&services)
            .filter_map(|name| {
                let name = ServiceName::new(name).ok()?;
                let service = self.read_service(&services, &name)?;
                Some((name, service))
            })
            .collect()
    }

    /// One live (not deleted) service.
    pub fn service(&self, name: &ServiceName) -> Option<Service> {
        let services = self.map(&ROOT, SERVICES)?;
        self.read_service(&services, name).filter(|s| !s.deleted)
    }

    fn read_service(&self, services: &ObjId, name: &ServiceName) -> Option<Service> {
        let obj = self.map(services, name.as_str())?;
        let spec = self.map(&obj, "spec")?;
        Some(Service {
            name: name.clone(),
            generation: self.uint(&obj, "generation").unwrap_or_default(),
            deleted: self.boolean(&obj, "deleted").unwrap_or(false),
            spec: ServiceSpec {
                image: self.string(&spec, "image").unwrap_or_default(),
                replicas: self
                    .uint(&spec, "replicas")
                    .and_then(|r| u32::try_from(r).ok())
                    .unwrap_or_default(),
                command: self.json(&spec, "command"),
                env: self.string_map(&spec, "env"),
                ports: self.json::<Vec<PortSpec>>(&spec, "ports"),
            },
        })
    }

    /// The lease in force: of concurrent claims (two sides of a partition), the greatest
    /// `(epoch, holder)` stands, on every replica alike.
    pub fn lease(&self) -> Option<Lease> {
        self.all_maps(&ROOT, LEASE)
            .into_iter()
            .filter_map(|obj| {
                Some(Lease {
                    epoch: Epoch(self.uint(&obj, "epoch")?),
                    holder: NodeId(self.string(&obj, "holder")?),
                })
            })
            .max()
    }

    /// The assignment that stands for every slot: of concurrent writes of one slot, the one made
    /// under the greatest `(epoch, holder)`.
    pub fn assignments(&self) -> BTreeMap<SlotId, Assignment> {
        let Some(assignments) = self.map(&ROOT, ASSIGNMENTS) else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&assignments)
            .filter_map(|key| {
                let slot = SlotId::parse(&key)?;
                let best = self
                    .all_maps(&assignments, &key)
                    .into_iter()
                    .filter_map(|obj| {
                        Some(Assignment {
                            node: NodeId(self.string(&obj, "node")?),
                            epoch: Epoch(self.uint(&obj, "epoch")?),
                            holder: NodeId(self.string(&obj, "holder").unwrap_or_default()),
                            spec_generation: self.uint(&obj, "spec_generation").unwrap_or_default(),
                        })
                    })
                    .max_by(|a, b| a.rank().cmp(&b.rank()))?;
                Some((slot, best))
            })
            .collect()
    }

    /// Join tokens by id.
    pub fn tokens(&self) -> BTreeMap<String, TokenRecord> {
        let Some(tokens) = self.map(&ROOT, TOKENS) else {
            return BTreeMap::new();
        };
        self.doc
            .keys(&tokens)
            .filter_map(|id| {
                let obj = self.map(&tokens, &id)?;
                Some((
                    id.clone(),
                    TokenRecord {
                        id,
                        digest: self.string(&obj, "digest")?,
                        expires_at: self.int(&obj, "expires_at").unwrap_or_default(),
                        uses_left: self.uint(&obj, "uses_left").unwrap_or_default(),
                        role: self.string(&obj, "role").unwrap_or_default(),
                    },
                ))
            })
            .collect()
    }

    // ---- writes --------------------------------------------------------------------------

    fn ensure_map(&mut self, parent: &ObjId, key: &str) -> Result<ObjId, CrdtError> {
        match self.map(parent, key) {
            Some(id) => Ok(id),
            None => Ok(self.doc.put_object(parent, key, ObjType::Map)?),
        }
    }

    fn write_member(&mut self, member: &Member) -> Result<(), CrdtError> {
        let members = self.ensure_map(&ROOT, MEMBERS)?;
        let obj = self
            .doc
            .put_object(&members, member.id.as_str(), ObjType::Map)?;
        self.doc.put(&obj, "name", member.name.as_str())?;
        self.doc
            .put(&obj, "addrs", serde_json::to_string(&member.addrs)?)?;
        let labels = self.doc.put_object(&obj, "labels", ObjType::Map)?;
        for (k, v) in &member.labels {
            self.doc.put(&labels, k.as_str(), v.as_str())?;
        }
        self.doc
            .put(&obj, "admitted_by", member.admitted_by.as_str())?;
        self.doc.put(&obj, "admitted_at", member.admitted_at)?;
        self.doc.put(&obj, "state", member.state.as_str())?;
        Ok(())
    }

    /// Admits (or re-writes) a member. Returns the change to gossip.
    pub fn add_member(&mut self, member: &Member) -> Result<ChangeBytes, CrdtError> {
        self.write_member(member)?;
        Ok(self.commit(format!(
            "member add {} ({})",
            member.name,
            member.id.short()
        )))
    }

    /// Replaces a member's addresses (a node that restarted on new ports).
    ///
    /// Errors: [`CrdtError::UnknownMember`].
    pub fn set_member_addrs(
        &mut self,
        id: &NodeId,
        addrs: &[String],
    ) -> Result<ChangeBytes, CrdtError> {
        let members = self
            .map(&ROOT, MEMBERS)
            .ok_or_else(|| CrdtError::UnknownMember(id.clone()))?;
        let obj = self
            .map(&members, id.as_str())
            .ok_or_else(|| CrdtError::UnknownMember(id.clone()))?;
        self.doc.put(&obj, "addrs", serde_json::to_string(addrs)?)?;
        Ok(self.commit(format!("member addrs {}", id.short())))
    }

    /// Creates a service (or re-creates a deleted one with a higher generation).
    ///
    /// Errors: [`CrdtError::ServiceExists`] when a live service has that name.
    pub fn create_service(
        &mut self,
        name: &ServiceName,
        spec: &ServiceSpec,
    ) -> Result<ChangeBytes, CrdtError> {
        let services = self.ensure_map(&ROOT, SERVICES)?;
        let previous = self.read_service(&services, name);
        if let Some(existing) = &previous {
            if !existing.deleted {
                return Err(CrdtError::ServiceExists(name.clone()));
            }
        }
        let generation = previous.map(|s| s.generation + 1).unwrap_or(1);
        let obj = self
            .doc
            .put_object(&services, name.as_str(), ObjType::Map)?;
        self.doc.put(&obj, "generation", generation)?;
        self.doc.put(&obj, "deleted", false)?;
        let spec_obj = self.doc.put_object(&obj, "spec", ObjType::Map)?;
        self.doc.put(&spec_obj, "image", spec.image.as_str())?;
        self.doc
            .put(&spec_obj, "replicas", u64::from(spec.replicas))?;
        self.doc
            .put(&spec_obj, "command", serde_json::to_string(&spec.command)?)?;
        self.doc
            .put(&spec_obj, "ports", serde_json::to_string(&spec.ports)?)?;
        let env = self.doc.put_object(&spec_obj, "env", ObjType::Map)?;
        for (k, v) in &spec.env {
            self.doc.put(&env, k.as_str(), v.as_str())?;
        }
        Ok(self.commit(format!("service create {name}")))
    }

    fn live_service_obj(&self, name: &ServiceName) -> Result<ObjId, CrdtError> {
        let services = self
            .map(&ROOT, SERVICES)
            .ok_or_else(|| CrdtError::UnknownService(name.clone()))?;
        match self.read_service(&services, name) {
            Some(s) if !s.deleted => self
                .map(&services, name.as_str())
                .ok_or_else(|| CrdtError::UnknownService(name.clone())),
            _ => Err(CrdtError::UnknownService(name.clone())),
        }
    }

    /// Sets a service's replica count.
    ///
    /// Errors: [`CrdtError::UnknownService`].
    pub fn scale_service(
        &mut self,
        name: &ServiceName,
        replicas: u32,
    ) -> Result<ChangeBytes, CrdtError> {
        let obj = self.live_service_obj(name)?;
        let spec = self.ensure_map(&obj, "spec")?;
        self.doc.put(&spec, "replicas", u64::from(replicas))?;
        Ok(self.commit(format!("service scale {name} {replicas}")))
    }

    /// Deletes a service: sets its tombstone, which wins over concurrent updates of its spec.
    ///
    /// Errors: [`CrdtError::UnknownService`].
    pub fn delete_service(&mut self, name: &ServiceName) -> Result<ChangeBytes, CrdtError> {
        let obj = self.live_service_obj(name)?;
        self.doc.put(&obj, "deleted", true)?;
        Ok(self.commit(format!("service rm {name}")))
    }

    /// Writes a lease claim. Concurrent claims all stay in the document as conflicts and
    /// [`DesiredState::lease`] picks the greatest, so the merge rule holds on every replica.
    pub fn claim_lease(&mut self, lease: &Lease) -> Result<ChangeBytes, CrdtError> {
        let obj = self.doc.put_object(ROOT, LEASE, ObjType::Map)?;
        self.doc.put(&obj, "holder", lease.holder.as_str())?;
        self.doc.put(&obj, "epoch", lease.epoch.0)?;
        Ok(self.commit(format!(
            "lease claim epoch {} by {}",
            lease.epoch,
            lease.holder.short()
        )))
    }

    /// Applies one scheduling round in a single change: `put` writes assignments, `remove`
    /// deletes them. Returns `None` when both are empty.
    pub fn write_assignments(
        &mut self,
        put: &[(SlotId, Assignment)],
        remove: &[SlotId],
    ) -> Result<Option<ChangeBytes>, CrdtError> {
        if put.is_empty() && remove.is_empty() {
            return Ok(None);
        }
        let assignments = self.ensure_map(&ROOT, ASSIGNMENTS)?;
        for (slot, a) in put {
            let obj = self
                .doc
                .put_object(&assignments, slot.key(), ObjType::Map)?;
            self.doc.put(&obj, "node", a.node.as_str())?;
            self.doc.put(&obj, "epoch", a.epoch.0)?;
            self.doc.put(&obj, "holder", a.holder.as_str())?;
            self.doc.put(&obj, "spec_generation", a.spec_generation)?;
        }
        for slot in remove {
            self.doc.delete(&assignments, slot.key())?;
        }
        Ok(Some(self.commit(format!(
            "schedule: {} placed, {} removed",
            put.len(),
            remove.len()
        ))))
    }

    /// Stores a join token record.
    pub fn add_token(&mut self, token: &TokenRecord) -> Result<ChangeBytes, CrdtError> {
        let tokens = self.ensure_map(&ROOT, TOKENS)?;
        let obj = self
            .doc
            .put_object(&tokens, token.id.as_str(), ObjType::Map)?;
        self.doc.put(&obj, "digest", token.digest.as_str())?;
        self.doc.put(&obj, "expires_at", token.expires_at)?;
        self.doc.put(&obj, "uses_left", token.uses_left)?;
        self.doc.put(&obj, "role", token.role.as_str())?;
        Ok(self.commit(format!("join-token create {}", token.id)))
    }

    /// Admits `member` with the token `token_id`: decrements its uses and writes the member, in
    /// one change. The caller has checked the token.
    ///
    /// Errors: [`CrdtError::UnknownToken`].
    pub fn admit_with_token(
        &mut self,
        token_id: &str,
        member: &Member,
    ) -> Result<ChangeBytes, CrdtError> {
        let record = self
            .tokens()
            .remove(token_id)
            .ok_or_else(|| CrdtError::UnknownToken(token_id.to_string()))?;
        let tokens = self.ensure_map(&ROOT, TOKENS)?;
        let obj = self
            .map(&tokens, token_id)
            .ok_or_else(|| CrdtError::UnknownToken(token_id.to_string()))?;
        self.doc
            .put(&obj, "uses_left", record.uses_left.saturating_sub(1))?;
        self.write_member(member)?;
        Ok(self.commit(format!(
            "member admit {} ({}) with token {token_id}",
            member.name,
            member.id.short()
        )))
    }
}
