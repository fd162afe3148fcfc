//! The `Authorization` header of a remote API request: `api_token::verify` (scheme, then the
//! `WRNA1-<id>.<secret>` parser, then the records) against the fixture's token records.
//!
//! Input: the header value (UTF-8, as the HTTP layer hands it over).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_fuzz::{token_records, API_TOKEN_ID, NOW_SECS};
use warren_node::api_token::verify;

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let records = token_records();
    if let Ok(id) = verify(Some(header), &records, NOW_SECS) {
        assert_eq!(id, API_TOKEN_ID, "only the operator token opens the API");
    }
});
