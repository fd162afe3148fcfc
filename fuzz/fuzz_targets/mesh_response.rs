//! Responses on `/warren/req/1`: the swarm's CBOR codec reading one response stream's bytes,
//! through `warren_mesh::fuzzing::decode_response`.
//!
//! Input: the bytes of the response stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_mesh::Response;

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    if let Ok(Response::Ok(body)) = warren_mesh::fuzzing::decode_response(data) {
        assert!(body.len() <= data.len(), "the body comes from the stream");
    }
});
