//! The module graph points one way. Each top-level module of `src/` (and of `loadgen/src/`)
//! may name only the modules listed for it here: the allowed edges, written down once. A file
//! that names a module not in its list, or the I/O crate outside the engine module, fails this
//! test with the file and the edge.
//!
//! The picture is in ARCHITECTURE.md; keep the two in step.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// ringlb, bottom to top: a module may use the ones before it that are listed.
const RINGLB: &[(&str, &[&str])] = &[
    ("http1", &[]),
    ("balance", &[]),
    ("config", &["http1", "balance"]),
    ("engine", &[]),
    ("state", &["config", "engine"]),
    ("metrics", &["config", "http1", "state"]),
    ("accesslog", &["config", "http1", "metrics", "state"]),
    ("tls", &["config", "engine", "metrics"]),
    ("upstream", &["config", "engine", "state"]),
    ("discovery", &["config", "state"]),
    (
        "context",
        &[
            "config",
            "engine",
            "state",
            "balance",
            "metrics",
            "accesslog",
            "tls",
            "upstream",
        ],
    ),
    (
        "proxy",
        &[
            "http1",
            "balance",
            "config",
            "engine",
            "state",
            "metrics",
            "accesslog",
            "upstream",
            "context",
        ],
    ),
    (
        "health",
        &[
            "http1", "config", "engine", "state", "metrics", "tls", "context",
        ],
    ),
    (
        "admin",
        &["http1", "config", "engine", "state", "metrics", "context"],
    ),
    (
        "server",
        &[
            "http1",
            "balance",
            "config",
            "engine",
            "state",
            "metrics",
            "accesslog",
            "tls",
            "upstream",
            "context",
            "proxy",
            "health",
            "admin",
            "discovery",
        ],
    ),
];

/// loadgen, bottom to top.
const LOADGEN: &[(&str, &[&str])] = &[
    ("http", &[]),
    ("rt", &[]),
    ("cli", &["rt"]),
    ("serve", &["cli", "http", "rt"]),
    ("run", &["cli", "http", "rt"]),
];

/// Only these modules may name the I/O engine crates.
const ENGINE_CRATES: &[&str] = &["glommio", "io_uring", "io-uring"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a Rust file without comments and string literals (so prose that mentions a
/// module does not count).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && b[i + 1] == b'\\' {
            // An escaped char literal: '\n', '\'', '\u{7f}'.
            let mut j = i + 3;
            while j < b.len() && b[j] != b'\'' {
                j += 1;
            }
            i = j + 1;
        } else if b[i] == b'\'' && i + 2 < b.len() && b[i + 2] == b'\'' {
            // A plain char literal such as '"' (lifetimes have no closing quote).
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Top-level modules a piece of code names through `crate::`, including `use crate::{a, b}`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        // `ringlb::...` or `loadgen::...` are other crates; skip `xcrate::`.
        if at > 0 && {
            let c = code.as_bytes()[at - 1];
            c.is_ascii_alphanumeric() || c == b'_'
        } {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        out.insert(ident_at(&group[i..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident_at(rest).to_string());
        }
    }
    out
}

fn check(root: &Path, layers: &[(&str, &[&str])], engine: &str) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let known: BTreeSet<&str> = layers.iter().map(|(m, _)| *m).collect();
    let mut problems = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root).expect("under root");
        let first = rel.components().next().expect("component");
        let module = first
            .as_os_str()
            .to_str()
            .expect("utf-8 path")
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(&file).expect("read");
        let code = code_only(&text);
        for krate in ENGINE_CRATES {
            if module != engine && code.contains(&format!("{krate}::")) {
                problems.push(format!(
                    "{}: names {krate} outside the `{engine}` module",
                    file.display()
                ));
            }
        }
        let Some((_, allowed)) = layers.iter().find(|(m, _)| *m == module) else {
            // lib.rs and main.rs sit on top.
            assert!(
                module == "lib" || module == "main",
                "{}: module `{module}` is missing from the layer table in tests/layers.rs",
                file.display()
            );
            continue;
        };
        for used in crate_refs(&code) {
            if used == module || !known.contains(used.as_str()) {
                continue;
            }
            if !allowed.contains(&used.as_str()) {
                problems.push(format!(
                    "{}: `{module}` uses `{used}`, which is not below it",
                    file.display()
                ));
            }
        }
    }
    problems
}

#[test]
fn ringlb_modules_point_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = check(&root, RINGLB, "engine");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn loadgen_modules_point_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadgen/src");
    let problems = check(&root, LOADGEN, "rt");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_top_level_module_is_in_the_table() {
    for (root, layers) in [("src", RINGLB), ("loadgen/src", LOADGEN)] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(root);
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let name = entry.expect("entry").file_name();
            let name = name.to_str().expect("utf-8").trim_end_matches(".rs");
            if name == "lib" || name == "main" {
                continue;
            }
            assert!(
                layers.iter().any(|(m, _)| *m == name),
                "{root}/{name} is not in the layer table of tests/layers.rs"
            );
        }
    }
}

#[test]
fn the_checker_sees_an_upward_edge() {
    // A test that cannot fail is a defect: a lower module naming a higher one is caught,
    // in both `use` forms, and prose or strings are not.
    let code = code_only(
        "use crate::{config::X, proxy};\n// crate::admin in a comment\nlet s = \"crate::server\";\nfn f() { crate::engine::spawn(); }",
    );
    let refs = crate_refs(&code);
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        vec!["config", "engine", "proxy"]
    );
}
