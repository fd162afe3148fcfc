//! Image architecture (issue 16): a task goes only to nodes whose platform its image
//! supports. Pure; the scheduler calls [`runs_on`] and [`pending_reason`], the holder builds
//! the input with [`restrictions`] from its members' reports.
//!
//! What a node can know of an image's platforms, and what each tells:
//!
//! - **Built or loaded locally** (the engine's inspect shows no `RepoDigests`): the image is
//!   the one platform the inspect names (`Architecture`, `Os`, `Variant`). It came from no
//!   registry, so no other platform of it exists anywhere ([`ImageSource::Local`]).
//! - **Pulled from a registry** (`RepoDigests` present): the inspect shows only the platform
//!   the engine pulled for itself, while the registry may hold a multi-platform index: it
//!   says nothing of the other platforms ([`ImageSource::Pulled`]).
//! - **The registry's answer** (the engine's distribution inspect, which lists every
//!   platform of the manifest list): the whole set ([`ImageSource::Registry`]).
//!
//! The rule ([`restrictions`]): an image is restricted to a set of platforms when some node
//! has the registry's answer (the union of such answers), or when every report of it is a
//! local build and they all agree on one platform. Anything else — a pulled copy without
//! the registry's answer, or local builds that disagree (each node built its own from one
//! Dockerfile, so the tag exists per platform) — restricts nothing: only `node.arch`
//! constraints then apply. Wrongly restricting would leave a task pending that could run;
//! not restricting at worst lets one fail to pull (`no matching manifest`), which the
//! failed-task rule then moves elsewhere.
//!
//! A node whose platform is unknown (it announced none) is never excluded by this rule.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use warren_crdt::{Member, Platform, UNKNOWN_PLATFORM};

use crate::engine::truncate_text;

/// Most images one report describes.
pub const MAX_IMAGE_REPORTS: usize = 64;
/// Most platforms one image report lists.
pub const MAX_IMAGE_PLATFORMS: usize = 16;
/// Longest image reference, OS, architecture or variant a report carries, in bytes.
pub const MAX_IMAGE_TEXT_BYTES: usize = 256;

/// One platform of an image, in Docker's words: `linux`/`amd64`, `linux`/`arm`/`v7`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ImagePlatform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `amd64`, `arm64`.
    pub arch: String,
    /// Architecture variant, e.g. `v7`; empty when none.
    #[serde(default)]
    pub variant: String,
}

impl fmt::Display for ImagePlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Where a node's knowledge of an image's platforms comes from (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// Pulled from a registry: the platforms listed are the engine's own, not all of the
    /// image's. The default (it restricts nothing).
    #[default]
    Pulled,
    /// Built or loaded on the node (no repository digest): the platform listed is the only one.
    Local,
    /// The registry's manifest list, as the engine's distribution inspect answered: all of
    /// the image's platforms.
    Registry,
}

/// What one node knows of one image's platforms, reported in its heartbeats (soft state).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageReport {
    /// The image reference as services name it, e.g. `warren-test:latest`.
    pub image: String,
    /// Where the platforms come from.
    #[serde(default)]
    pub source: ImageSource,
    /// The platforms (at most [`MAX_IMAGE_PLATFORMS`]).
    #[serde(default)]
    pub platforms: Vec<ImagePlatform>,
}

impl ImageReport {
    /// This report with its lists and texts cut to their bounds (a peer's report is not
    /// trusted to be small).
    pub fn bounded(mut self) -> Self {
        let cut = |s: &mut String| {
            if s.len() > MAX_IMAGE_TEXT_BYTES {
                *s = truncate_text(s, MAX_IMAGE_TEXT_BYTES);
            }
        };
        cut(&mut self.image);
        self.platforms.truncate(MAX_IMAGE_PLATFORMS);
        for p in &mut self.platforms {
            cut(&mut p.os);
            cut(&mut p.arch);
            cut(&mut p.variant);
        }
        self
    }
}

/// The images whose platforms are known in full, each with its platforms, from every
/// node's reports (see the module doc for the rule). An image missing from the result runs
/// anywhere as far as this rule goes.
pub fn restrictions<'a>(
    reports: impl IntoIterator<Item = &'a ImageReport>,
) -> BTreeMap<String, BTreeSet<ImagePlatform>> {
    #[derive(Default)]
    struct Seen {
        registry: BTreeSet<ImagePlatform>,
        local: Option<BTreeSet<ImagePlatform>>,
        unrestricted: bool,
    }
    let mut by_image: BTreeMap<&str, Seen> = BTreeMap::new();
    for r in reports {
        let seen = by_image.entry(r.image.as_str()).or_default();
        let platforms: BTreeSet<ImagePlatform> = r.platforms.iter().cloned().collect();
        match r.source {
            ImageSource::Registry => seen.registry.extend(platforms),
            ImageSource::Pulled => seen.unrestricted = true,
            ImageSource::Local => match &seen.local {
                None if !platforms.is_empty() => seen.local = Some(platforms),
                Some(first) if *first == platforms => {}
                _ => seen.unrestricted = true,
            },
        }
    }
    by_image
        .into_iter()
        .filter_map(|(image, seen)| {
            let set = if !seen.registry.is_empty() {
                seen.registry
            } else if seen.unrestricted {
                return None;
            } else {
                seen.local?
            };
            Some((image.to_string(), set))
        })
        .collect()
}

/// Whether a node of `platform` may run an image restricted to `allowed` (`None`: not
/// restricted): its OS and architecture are those of one allowed platform (the variant is
/// not announced by members, so not compared). A node whose platform is unknown may.
pub fn runs_on(allowed: Option<&BTreeSet<ImagePlatform>>, platform: Option<&Platform>) -> bool {
    let (Some(allowed), Some(p)) = (allowed, platform) else {
        return true;
    };
    if p.arch == UNKNOWN_PLATFORM || p.os == UNKNOWN_PLATFORM {
        return true;
    }
    allowed.iter().any(|a| a.os == p.os && a.arch == p.arch)
}

/// Why no node takes a slot of `image` when the members its constraints allow (`excluded`)
/// all run a platform it lacks: `image warren-test:latest is linux/amd64 only
/// (node.arch=arm64)` (every architecture of those members, each once).
pub fn pending_reason<'a>(
    image: &str,
    allowed: &BTreeSet<ImagePlatform>,
    excluded: impl IntoIterator<Item = &'a Member>,
) -> String {
    let platforms: Vec<String> = allowed.iter().map(ToString::to_string).collect();
    let archs: BTreeSet<&str> = excluded
        .into_iter()
        .map(|m| m.platform.arch.as_str())
        .collect();
    let archs: Vec<&str> = archs.into_iter().collect();
    format!(
        "image {image} is {} only (node.arch={})",
        platforms.join(", "),
        archs.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(os: &str, arch: &str) -> ImagePlatform {
        ImagePlatform {
            os: os.into(),
            arch: arch.into(),
            variant: String::new(),
        }
    }

    fn report(image: &str, source: ImageSource, platforms: &[(&str, &str)]) -> ImageReport {
        ImageReport {
            image: image.into(),
            source,
            platforms: platforms.iter().map(|(o, a)| platform(o, a)).collect(),
        }
    }

    #[test]
    fn only_local_builds_that_agree_or_the_registrys_answer_restrict_an_image() {
        use ImageSource::*;
        let amd = [("linux", "amd64")];
        let arm = [("linux", "arm64")];
        let reports = [
            // Built here and there for amd64 only: restricted.
            report("built:1", Local, &amd),
            report("built:1", Local, &amd),
            // Built for amd64 on one node, for arm64 on another: each built its own.
            report("twice:1", Local, &amd),
            report("twice:1", Local, &arm),
            // Pulled: the inspect shows only the engine's platform.
            report("pulled:1", Pulled, &amd),
            // Loaded on one node, pulled on another: the registry may hold more.
            report("mixed:1", Local, &amd),
            report("mixed:1", Pulled, &amd),
            // The registry's manifest list says it all, whatever a pulled copy shows.
            report("multi:1", Pulled, &amd),
            report(
                "multi:1",
                Registry,
                &[("linux", "amd64"), ("linux", "arm64")],
            ),
        ];
        let r = restrictions(&reports);
        assert_eq!(
            r.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["built:1", "multi:1"]
        );
        assert_eq!(r["built:1"], [platform("linux", "amd64")].into());
        assert_eq!(r["multi:1"].len(), 2);
    }

    #[test]
    fn a_node_runs_an_image_of_its_os_and_arch_or_of_an_unknown_platform() {
        let allowed: BTreeSet<_> = [platform("linux", "amd64")].into();
        let node = |arch: &str| Platform {
            arch: arch.into(),
            os: "linux".into(),
        };
        assert!(runs_on(Some(&allowed), Some(&node("amd64"))));
        assert!(!runs_on(Some(&allowed), Some(&node("arm64"))));
        assert!(runs_on(Some(&allowed), Some(&Platform::default())));
        assert!(runs_on(None, Some(&node("arm64"))));
        assert!(runs_on(Some(&allowed), None));
        let windows = Platform {
            arch: "amd64".into(),
            os: "windows".into(),
        };
        assert!(!runs_on(Some(&allowed), Some(&windows)));
    }

    #[test]
    fn the_scheduler_places_an_image_only_on_its_platforms_and_says_why_not() {
        use crate::core::scheduler::{plan_observed, Observations, Services};
        use warren_crdt::{Epoch, Lease, MemberState, NodeId, Service, ServiceName, ServiceSpec};
        let member = |name: &str, arch: &str| {
            let id = NodeId(name.into());
            (
                id.clone(),
                Member {
                    id: id.clone(),
                    name: name.into(),
                    addrs: vec![],
                    labels: Default::default(),
                    capabilities: Default::default(),
                    platform: Platform {
                        arch: arch.into(),
                        os: "linux".into(),
                    },
                    admitted_by: id,
                    admitted_at: 0,
                    state: MemberState::Active,
                    availability: Default::default(),
                },
            )
        };
        let name = ServiceName::new("web").expect("name");
        let services = Services::from(vec![(
            name.clone(),
            Service {
                name,
                generation: 1,
                deleted: false,
                previous_spec: None,
                older_specs: Default::default(),
                rollout: None,
                spec: ServiceSpec {
                    image: "warren-test:latest".into(),
                    replicas: 2,
                    ..Default::default()
                },
            },
        )]);
        let lease = Lease {
            epoch: Epoch(1),
            holder: NodeId("x86".into()),
        };
        let observed = Observations {
            image_platforms: restrictions(&[report(
                "warren-test:latest",
                ImageSource::Local,
                &[("linux", "amd64")],
            )]),
            ..Observations::default()
        };
        let members: BTreeMap<_, _> = [member("x86", "amd64"), member("pi", "arm64")].into();
        let live: BTreeSet<NodeId> = members.keys().cloned().collect();
        let p = plan_observed(
            &services,
            &members,
            &live,
            &BTreeMap::new(),
            &lease,
            &observed,
        );
        assert_eq!(p.put.len(), 2, "{p:?}");
        assert!(p.put.iter().all(|(_, a)| a.node == NodeId("x86".into())));
        // Unrestricted, the replicas spread over both.
        let p = plan_observed(
            &services,
            &members,
            &live,
            &BTreeMap::new(),
            &lease,
            &Observations::default(),
        );
        assert!(p.put.iter().any(|(_, a)| a.node == NodeId("pi".into())));

        // Only the arm64 node is live: both wait, saying why.
        let pi: BTreeSet<NodeId> = [NodeId("pi".into())].into();
        let p = plan_observed(
            &services,
            &members,
            &pi,
            &BTreeMap::new(),
            &lease,
            &observed,
        );
        assert!(p.put.is_empty());
        assert_eq!(p.pending.len(), 2);
        assert_eq!(
            p.pending[0].1,
            "image warren-test:latest is linux/amd64 only (node.arch=arm64)"
        );
    }

    #[test]
    fn a_peers_image_report_is_bounded() {
        let long = "x".repeat(MAX_IMAGE_TEXT_BYTES * 2);
        let r = ImageReport {
            image: long.clone(),
            source: ImageSource::Local,
            platforms: vec![platform(&long, &long); MAX_IMAGE_PLATFORMS * 2],
        }
        .bounded();
        assert!(r.image.len() <= MAX_IMAGE_TEXT_BYTES);
        assert_eq!(r.platforms.len(), MAX_IMAGE_PLATFORMS);
        assert!(r.platforms[0].arch.len() <= MAX_IMAGE_TEXT_BYTES);
        // An older peer's report without source or platforms reads, restricting nothing.
        let old: ImageReport = serde_json::from_str(r#"{"image": "a:1"}"#).expect("reads");
        assert_eq!(old.source, ImageSource::Pulled);
        assert!(restrictions(&[old]).is_empty());
    }
}
