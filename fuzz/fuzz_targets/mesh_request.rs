//! Inbound requests on `/warren/req/1`: the swarm's CBOR codec (libp2p's `cbor::Codec` with
//! the same limits) reading one stream's bytes, through `warren_mesh::fuzzing::decode_request`.
//!
//! Input: the bytes of the request stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    if let Ok((_kind, body)) = warren_mesh::fuzzing::decode_request(data) {
        assert!(body.len() <= data.len(), "the body comes from the stream");
    }
});
