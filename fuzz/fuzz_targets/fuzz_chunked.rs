// Property: `ChunkedDecoder` never panics on any bytes, never claims bytes past its input, and
// splitting the input (at the offset the first byte names) yields the same payload, the same end
// and the same error as one call. The check lives in src/http1/tests/checks.rs, which
// `cargo test` also runs on every file in fuzz/corpus/fuzz_chunked/.
#![no_main]

use libfuzzer_sys::fuzz_target;
#[allow(unused_imports)]
use ringlb::http1::*;

#[allow(dead_code)]
#[path = "../../src/http1/tests/checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::chunked(data));
