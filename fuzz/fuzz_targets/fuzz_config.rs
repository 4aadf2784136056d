// Property: `Config::parse` never panics on any text, and a refused config reports at least one
// problem, none of them empty. The seed corpus (fuzz/corpus/fuzz_config/) holds the example
// config and small valid and invalid files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlb::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(text) {
        let lines = e.lines();
        assert!(!lines.is_empty(), "refused without a reason: {e}");
        assert!(lines.iter().all(|l| !l.trim().is_empty()), "{lines:?}");
    }
});
