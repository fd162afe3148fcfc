//! The order in which one service's slots take members during a scheduling round, kept in
//! heaps: the scheduler's rule 5 (`scheduler`'s module doc) — for each spread preference in
//! turn the group holding the fewest of the service's replicas, then the fewest slots of the
//! service on the member, the fewest slots overall, the lowest id — without scanning every
//! member for every slot.
//!
//! Members are numbered by their position in the round's list of eligible members, sorted
//! by id, so that comparing numbers compares ids. Each leaf group of the service's spread
//! preferences (one group when it has none) keeps a min-heap of `(slots of the service,
//! slots overall, number)`. A heap entry is current when its counts are the member's
//! counts now; a placement pushes the member again with its new counts and the old entry,
//! now stale, is dropped when it comes to the top (lazy deletion). Choosing a slot's member
//! looks at the top of each group only: `O(G log M)` for `G` leaf groups and `M` matching
//! members, against `O(M)` for the scan it replaces (`scheduler`'s benchmark has the
//! figures).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// What a member can do for the slot being placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    /// It can take the slot.
    Take,
    /// It cannot take this slot nor any later one of the service this round (its cap is
    /// reached, its free capacity no longer holds the reservation): dropped.
    Never,
    /// It cannot take this slot (the slot's task failed there and another member can take
    /// it) but may take the next one: set aside while this slot is placed.
    NotThisSlot,
}

/// A heap entry: `(slots of the service, slots overall, member number)`.
type Entry = (usize, usize, u32);

/// A group's label values, one per spread preference (`None`: the member lacks the label).
pub(crate) type GroupPath<'a> = Vec<Option<&'a str>>;

/// One leaf group of the spread preferences: its label values and its members.
#[derive(Debug)]
struct Group<'a> {
    path: Vec<Option<&'a str>>,
    heap: BinaryHeap<Reverse<Entry>>,
}

/// One service's candidate members for a round (module doc).
#[derive(Debug)]
pub(crate) struct Candidates<'a> {
    groups: Vec<Group<'a>>,
    /// Leaf group of each member number (`u32::MAX`: not a candidate).
    group_of: Vec<u32>,
    /// The service's replicas per group prefix: `[v1]`, `[v1, v2]`, ... (the spread
    /// preferences' counts at each depth).
    counts: BTreeMap<Vec<Option<&'a str>>, usize>,
}

impl<'a> Candidates<'a> {
    /// The candidates `members` (numbers below `load.len()`), each in the leaf group
    /// `path(number)`; `counts` holds the service's replicas per group prefix already
    /// placed; `load` and `total` the member's slots of the service and overall.
    pub(crate) fn new(
        members: &[u32],
        path: impl Fn(u32) -> Vec<Option<&'a str>>,
        counts: BTreeMap<Vec<Option<&'a str>>, usize>,
        load: &[usize],
        total: &[usize],
    ) -> Self {
        let mut index: BTreeMap<Vec<Option<&'a str>>, u32> = BTreeMap::new();
        let mut groups: Vec<(GroupPath<'a>, Vec<Reverse<Entry>>)> = Vec::new();
        let mut group_of = vec![u32::MAX; load.len()];
        for &m in members {
            let p = path(m);
            let g = match index.get(&p) {
                Some(g) => *g,
                None => {
                    let g = groups.len() as u32;
                    index.insert(p.clone(), g);
                    groups.push((p, Vec::new()));
                    g
                }
            };
            group_of[m as usize] = g;
            groups[g as usize]
                .1
                .push(Reverse((load[m as usize], total[m as usize], m)));
        }
        Self {
            groups: groups
                .into_iter()
                .map(|(path, entries)| Group {
                    path,
                    heap: BinaryHeap::from(entries),
                })
                .collect(),
            group_of,
            counts,
        }
    }

    /// The spread key of a leaf group: the service's replicas in each of its prefixes.
    fn spread(&self, path: &[Option<&'a str>]) -> Vec<usize> {
        (1..=path.len())
            .map(|depth| self.counts.get(&path[..depth]).copied().unwrap_or(0))
            .collect()
    }

    /// The first member in the order of the module doc that `fit` says can take the slot,
    /// taken out of its heap (give it back with [`Candidates::placed`] once placed); `None`
    /// when no candidate can. `load` and `total` are the counts now.
    pub(crate) fn choose(
        &mut self,
        load: &[usize],
        total: &[usize],
        mut fit: impl FnMut(u32) -> Fit,
    ) -> Option<u32> {
        let mut aside: Vec<(usize, Entry)> = Vec::new();
        let mut best: Option<(Vec<usize>, Entry, usize)> = None;
        for g in 0..self.groups.len() {
            let top = loop {
                let Some(&Reverse(entry)) = self.groups[g].heap.peek() else {
                    break None;
                };
                let (l, t, m) = entry;
                let current = load.get(m as usize) == Some(&l) && total.get(m as usize) == Some(&t);
                if !current {
                    self.groups[g].heap.pop();
                    continue;
                }
                match fit(m) {
                    Fit::Take => break Some(entry),
                    Fit::Never => {
                        self.groups[g].heap.pop();
                    }
                    Fit::NotThisSlot => {
                        self.groups[g].heap.pop();
                        aside.push((g, entry));
                    }
                }
            };
            if let Some(entry) = top {
                let key = self.spread(&self.groups[g].path);
                if best
                    .as_ref()
                    .is_none_or(|(k, e, _)| (&key, &entry) < (k, e))
                {
                    best = Some((key, entry, g));
                }
            }
        }
        // The chosen one is the top of its heap until the members set aside go back.
        let chosen = best.map(|(_, (_, _, m), g)| {
            self.groups[g].heap.pop();
            m
        });
        for (g, entry) in aside {
            self.groups[g].heap.push(Reverse(entry));
        }
        chosen
    }

    /// Member `m` took a slot of the service: its group's counts go up by one and it is a
    /// candidate again with its counts now (`load`, `total`, already counting the slot).
    /// A member that is not a candidate (a slot placed outside the order) changes nothing.
    pub(crate) fn placed(&mut self, m: u32, load: &[usize], total: &[usize]) {
        let Some(&g) = self.group_of.get(m as usize) else {
            return;
        };
        let Some(group) = self.groups.get_mut(g as usize) else {
            return;
        };
        for depth in 1..=group.path.len() {
            *self.counts.entry(group.path[..depth].to_vec()).or_default() += 1;
        }
        group
            .heap
            .push(Reverse((load[m as usize], total[m as usize], m)));
    }

    /// Whether every candidate is gone (dropped as [`Fit::Never`]): no later slot of the
    /// service can be placed this round.
    pub(crate) fn is_exhausted(&self) -> bool {
        self.groups.iter().all(|g| g.heap.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rule by a scan of every member, as the scheduler did it before the heaps.
    fn scan(
        members: &[u32],
        path: &dyn Fn(u32) -> Vec<Option<&'static str>>,
        counts: &BTreeMap<Vec<Option<&'static str>>, usize>,
        load: &[usize],
        total: &[usize],
        usable: &dyn Fn(u32) -> bool,
    ) -> Option<u32> {
        members
            .iter()
            .copied()
            .filter(|m| usable(*m))
            .min_by_key(|m| {
                let p = path(*m);
                let spread: Vec<usize> = (1..=p.len())
                    .map(|d| counts.get(&p[..d]).copied().unwrap_or(0))
                    .collect();
                (spread, load[*m as usize], total[*m as usize], *m)
            })
    }

    proptest! {
        /// Slot after slot, the heaps choose the member the scan chooses, with caps,
        /// capacity running out, slots refused on some members and totals that differ.
        #[test]
        fn the_heaps_choose_as_the_scan_does(
            n in 1usize..40,
            seed_total in proptest::collection::vec(0usize..4, 40),
            zones in proptest::collection::vec(0usize..4, 40),
            racks in proptest::collection::vec(0usize..3, 40),
            depth in 0usize..3,
            cap in 1usize..5,
            room in proptest::collection::vec(0usize..6, 40),
            refused in proptest::collection::vec(proptest::collection::vec(0u32..40, 0..3), 30),
            slots in 1usize..30,
        ) {
            const ZONES: [Option<&str>; 4] = [Some("a"), Some("b"), Some("c"), None];
            const RACKS: [Option<&str>; 3] = [Some("1"), Some("2"), None];
            let zones = zones.clone();
            let racks = racks.clone();
            let path = move |m: u32| -> Vec<Option<&'static str>> {
                let all = [ZONES[zones[m as usize]], RACKS[racks[m as usize]]];
                all[..depth].to_vec()
            };
            // Every other member is a candidate (the others fail the constraints).
            let members: Vec<u32> = (0..n as u32).filter(|m| m % 5 != 4).collect();
            let mut total: Vec<usize> = seed_total[..n].to_vec();
            let mut load = vec![0usize; n];
            let mut free: Vec<usize> = room[..n].to_vec();
            let counts = BTreeMap::new();
            let mut heaps = Candidates::new(&members, &path, counts.clone(), &load, &total);
            let mut counts = counts;
            for s in 0..slots {
                let no: Vec<u32> = refused.get(s).cloned().unwrap_or_default();
                let usable = |m: u32| load[m as usize] < cap && free[m as usize] > 0 && !no.contains(&m);
                let expected = scan(&members, &path, &counts, &load, &total, &usable);
                let chosen = heaps.choose(&load, &total, |m| {
                    if load[m as usize] >= cap || free[m as usize] == 0 {
                        Fit::Never
                    } else if no.contains(&m) {
                        Fit::NotThisSlot
                    } else {
                        Fit::Take
                    }
                });
                prop_assert_eq!(chosen, expected, "slot {}", s);
                let Some(m) = chosen else { continue };
                load[m as usize] += 1;
                total[m as usize] += 1;
                free[m as usize] -= 1;
                let p = path(m);
                for d in 1..=p.len() {
                    *counts.entry(p[..d].to_vec()).or_default() += 1;
                }
                heaps.placed(m, &load, &total);
            }
        }
    }
}
