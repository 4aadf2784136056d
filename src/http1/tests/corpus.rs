//! Replays `fuzz/corpus/<target>/*` through the property each fuzz target checks, so a crash
//! found by fuzzing and saved there stays a stable test.

use std::path::{Path, PathBuf};

use super::checks;

/// The repository root: four levels above this file (`src/http1/tests/corpus.rs`), which `file!`
/// names relative to the directory tests run in, or absolutely when mounted with `#[path]`.
fn corpus(target: &str) -> PathBuf {
    let root = Path::new(file!())
        .ancestors()
        .nth(4)
        .unwrap_or(Path::new(""));
    root.join("fuzz/corpus").join(target)
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let Ok(dir) = std::fs::read_dir(corpus(target)) else {
        return 0;
    };
    let mut n = 0;
    for entry in dir.flatten() {
        let path = entry.path();
        let data = std::fs::read(&path).unwrap();
        let run = std::panic::catch_unwind(|| check(&data));
        assert!(run.is_ok(), "{} fails", path.display());
        n += 1;
    }
    n
}

/// Runs every corpus file; a corpus directory that exists but holds nothing is a mistake.
fn run(target: &str, check: fn(&[u8])) {
    let n = replay(target, check);
    assert!(n > 0 || !corpus(target).exists(), "empty corpus {target}");
}

#[test]
fn request_corpus() {
    run("fuzz_request_parser", checks::request);
}

#[test]
fn response_corpus() {
    run("fuzz_response_parser", checks::response);
}

#[test]
fn chunked_corpus() {
    run("fuzz_chunked", checks::chunked);
}
