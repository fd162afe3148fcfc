//! Join tokens across a split: two members of one cluster whose documents do not sync are
//! each presented the same single-use token; exactly one node is admitted.

use std::collections::BTreeMap;

use warren_crdt::test_utils::{cluster_info, member_admitted_by};
use warren_crdt::{DesiredState, Member, NodeId};
use warren_node::core::Millis;
use warren_node::machine::{JoinError, MachineConfig, NodeMachine};
use warren_node::protocol::JoinRequest;
use warren_node::token::{JoinToken, TokenGrant, TokenRefusal};

fn member(id: &str, name: &str) -> Member {
    Member {
        name: name.into(),
        ..member_admitted_by(id, "a-founder")
    }
}

fn request(token: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&JoinRequest {
        token: token.into(),
        name: name.into(),
        addrs: Vec::new(),
        labels: BTreeMap::new(),
        x25519_public_key: String::new(),
        sync_after: false,
    })
    .expect("encode join request")
}

/// Two machines of one cluster (`a` and `b`) holding the same document, which never sync
/// again; the token record in it was minted by `a` when `minted_by` says so.
fn split_pair(minted_by: &str) -> (NodeMachine, NodeMachine, String) {
    let a = member("a-founder", "alpha");
    let b = member("b-second0", "bravo");
    let mut state = DesiredState::new_cluster(&cluster_info(), &a).expect("cluster");
    state.add_member(&b).expect("add b");
    let (token, record) = JoinToken::mint(
        &mut rand::rngs::OsRng,
        "c1",
        minted_by,
        Vec::new(),
        100,
        &TokenGrant::single_use(3_600),
    );
    state.add_token(&record).expect("token");
    let bytes = state.save();
    let machine = |m: &Member| {
        let state = DesiredState::load(m.id.clone(), &bytes).expect("load");
        NodeMachine::new(
            m.id.clone(),
            m.name.clone(),
            "test://api",
            state,
            MachineConfig::default(),
            Millis(0),
            7,
        )
    };
    (machine(&a), machine(&b), token.encode())
}

#[test]
fn single_use_token_admits_one_node_across_a_split() {
    let (mut a, mut b, token) = split_pair("a-founder");
    let x = NodeId("x-joiner1".into());
    let y = NodeId("y-joiner2".into());
    assert!(
        a.handle_join(&x, &request(&token, "x"), 200).is_ok(),
        "the minter admits"
    );
    let refused = b
        .handle_join(&y, &request(&token, "y"), 200)
        .expect_err("a member that did not mint the token refuses it");
    assert!(
        matches!(&refused, JoinError::MintedElsewhere { name, .. } if name == "alpha"),
        "{refused:?}"
    );
    // What the joining node reads names the minter and what to do.
    let text = refused.to_string();
    assert!(
        text.contains("was minted by member alpha")
            && text.contains("warren-cli join-token create"),
        "{text}"
    );
    assert!(a.state().members().contains_key(&x));
    assert!(!b.state().members().contains_key(&y));
    // The minter spent its single use.
    let z = NodeId("z-joiner3".into());
    assert!(matches!(
        a.handle_join(&z, &request(&token, "z"), 200),
        Err(JoinError::Token(TokenRefusal::Used))
    ));
}

#[test]
fn older_token_without_a_minter_admits_anywhere() {
    let (_, mut b, token) = split_pair("");
    let y = NodeId("y-joiner2".into());
    assert!(b.handle_join(&y, &request(&token, "y"), 200).is_ok());
}
