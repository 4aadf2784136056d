// Property: `parse_request` never panics on any bytes; a complete head stays within the input,
// and the head `write_request_head` makes of it parses back with the same method, path, host and
// body framing. The check lives in src/http1/tests/checks.rs, which `cargo test` also runs on
// every file in fuzz/corpus/fuzz_request_parser/.
#![no_main]

use libfuzzer_sys::fuzz_target;
#[allow(unused_imports)]
use ringlb::http1::*;

#[allow(dead_code)]
#[path = "../../src/http1/tests/checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::request(data));
