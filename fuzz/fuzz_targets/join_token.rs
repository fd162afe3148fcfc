//! Join tokens as an operator pastes them and a joining node sends them: `JoinToken::decode`,
//! then `JoinToken::check` against the fixture's records. A token that decodes re-encodes to
//! text that decodes to the same token.
//!
//! Input: the token text (UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_fuzz::{token_records, NOW_SECS};
use warren_node::token::JoinToken;

fuzz_target!(|data: &[u8]| {
    warren_fuzz::init();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = JoinToken::decode(text) else {
        return;
    };
    let again = JoinToken::decode(&token.encode()).expect("an encoded token decodes");
    assert_eq!(again, token);
    for record in token_records() {
        let _ = token.check(Some(&record), NOW_SECS);
    }
    let _ = token.check(None, NOW_SECS);
});
