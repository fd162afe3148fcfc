//! Volume writes through the node machine: a volume is bound to a member, a second create of
//! its name is refused, and removal is refused while a live service mounts it.

mod support;

use support::Cluster;
use warren_core::{Write, WriteError};
use warren_crdt::test_utils::{service_name, spec};
use warren_crdt::{Mount, NodeId, Volume};

fn volume(name: &str, node: NodeId) -> Volume {
    Volume {
        name: name.into(),
        driver: "local".into(),
        node,
        options: Default::default(),
    }
}

#[test]
fn a_volume_in_use_cannot_be_removed_and_names_its_services() {
    let mut cluster = Cluster::founded("a", false);
    cluster.tick();
    let a = cluster.id(0);
    let m = cluster.machine(0);
    m.write(Write::CreateVolume(volume("data", a.clone())))
        .expect("create");
    let again = m.write(Write::CreateVolume(volume("data", a.clone())));
    assert!(
        matches!(again, Err(WriteError::VolumeExists(_))),
        "{again:?}"
    );
    let stranger = m.write(Write::CreateVolume(volume(
        "other",
        NodeId("nobody".into()),
    )));
    assert!(stranger.is_err(), "a volume on a non-member is refused");
    let nfs = Volume {
        driver: "nfs".into(),
        ..volume("nfs", a.clone())
    };
    assert!(m.write(Write::CreateVolume(nfs)).is_err(), "only local");

    let mut mounted = spec("warren/busybox:latest", 1);
    mounted.mounts = vec![Mount::parse("source=data,target=/data").expect("mount")];
    m.write(Write::CreateService(service_name("db"), Box::new(mounted)))
        .expect("service");
    let busy = m.write(Write::RemoveVolume("data".into()));
    match busy {
        Err(e @ WriteError::VolumeInUse { .. }) => {
            assert!(e.to_string().contains("db"), "{e}")
        }
        other => panic!("expected in use, got {other:?}"),
    }
    m.write(Write::DeleteService(service_name("db")))
        .expect("delete");
    m.write(Write::RemoveVolume("data".into()))
        .expect("removed");
    assert!(m.view().volumes.is_empty());
}
