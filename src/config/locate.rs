//! Where a problem is in the file: `ringlb check` prints `file:line:column: path: message`.
//!
//! Problems are found on typed data, far from the text, and carry a path such as
//! `upstreams.api.servers[2].weight`. The file is parsed a second time with `toml_edit` (the
//! parser toml itself uses), which keeps the byte span of every key, table header and value,
//! and the path is walked through that document down to the deepest part that exists: the key
//! of a bad field, the header of a table with a missing field.
//!
//! Also here: every deserialization error of a file (unknown keys, wrong types, missing
//! fields), not only serde's first one, each with "did you mean" for a misspelt key.

use super::file::File;
use super::Problem;
use std::ops::Range;
use toml_edit::{ImDocument, Item, Table, Value};

/// One step of a problem path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `a.b[2].c` → [a, b, 2, c]. Keys may contain dots (an upstream named `api.v2`): the walk
/// joins segments again when a key is not found.
fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.trim_matches('"').to_string()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            match inner[..end].parse() {
                Ok(i) => out.push(Seg::Index(i)),
                Err(_) => return out,
            }
            rest = &inner[end + 1..];
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

/// The span of the deepest part of `segs` found under `node`.
fn walk(node: Node, segs: &[Seg], best: Option<Range<usize>>) -> Option<Range<usize>> {
    let Some(first) = segs.first() else {
        return best;
    };
    match first {
        Seg::Key(_) => {
            // Try `a`, then `a.b`, ... for keys that contain dots.
            for take in 1..=segs.len() {
                let keys: Option<Vec<&str>> = segs[..take]
                    .iter()
                    .map(|s| match s {
                        Seg::Key(k) => Some(k.as_str()),
                        Seg::Index(_) => None,
                    })
                    .collect();
                let Some(keys) = keys else { break };
                let key = keys.join(".");
                let found = match node {
                    Node::Item(Item::Table(t)) | Node::Table(t) => t.get_key_value(&key),
                    Node::Item(Item::Value(Value::InlineTable(t)))
                    | Node::Value(Value::InlineTable(t)) => t.get_key_value(&key),
                    _ => None,
                };
                if let Some((k, item)) = found {
                    let here = k.span().or_else(|| item.span()).or(best.clone());
                    return walk(Node::Item(item), &segs[take..], here);
                }
            }
            best
        }
        Seg::Index(i) => match node {
            Node::Item(Item::ArrayOfTables(a)) => match a.get(*i) {
                Some(t) => walk(Node::Table(t), &segs[1..], t.span().or(best)),
                None => best,
            },
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                match a.get(*i) {
                    Some(v) => walk(Node::Value(v), &segs[1..], v.span().or(best)),
                    None => best,
                }
            }
            _ => best,
        },
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// The parsed file, for positions.
pub(super) struct Positions<'a> {
    text: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

impl<'a> Positions<'a> {
    pub(super) fn new(text: &'a str) -> Positions<'a> {
        Positions {
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// Line and column of the field at `path`, or of the nearest enclosing part that exists.
    pub(super) fn of(&self, path: &str) -> Option<(usize, usize)> {
        let doc = self.doc.as_ref()?;
        let span = walk(Node::Item(doc.as_item()), &parse_path(path), None)?;
        Some(line_column(self.text, span.start))
    }
}

/// Deserializes `table` into the file mirror, collecting every error instead of the first:
/// after each one the offending key is removed and deserialization runs again (bounded). None
/// when an error cannot be stepped over (a missing required field of an array element).
pub(super) fn deserialize_all(mut table: toml::Table) -> (Option<File>, Vec<Problem>) {
    let mut problems = Vec::new();
    for _ in 0..64 {
        let value = toml::Value::Table(table.clone());
        let err = match serde_path_to_error::deserialize::<_, File>(value) {
            Ok(file) => return (Some(file), problems),
            Err(e) => e,
        };
        let mut segs: Vec<Seg> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let raw = err.inner().message().trim().to_string();
        let message = match unknown_field(&raw) {
            Some((name, expected)) => {
                if segs.last() != Some(&Seg::Key(name.clone())) {
                    segs.push(Seg::Key(name.clone()));
                }
                suggest(&name, &expected)
            }
            None => raw,
        };
        let path = render(&segs);
        let repeated = problems.last().is_some_and(|p: &Problem| p.path == path);
        if !repeated {
            problems.push(Problem {
                path: if path.is_empty() {
                    "(file)".into()
                } else {
                    path
                },
                message,
            });
        }
        // Removing an array element would renumber the ones after it: stop there instead.
        if repeated || !matches!(segs.last(), Some(Seg::Key(_))) || !remove(&mut table, &segs) {
            return (None, problems);
        }
    }
    (None, problems)
}

fn render(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Removes the key at `segs` (its last segment is a key); false if it is not there.
fn remove(table: &mut toml::Table, segs: &[Seg]) -> bool {
    let Some((Seg::Key(last), parents)) = segs.split_last() else {
        return false;
    };
    let mut root = toml::Value::Table(std::mem::take(table));
    let removed = remove_in(&mut root, parents, last);
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    removed
}

fn remove_in(value: &mut toml::Value, parents: &[Seg], last: &str) -> bool {
    match (parents.split_first(), value) {
        (None, toml::Value::Table(t)) => t.remove(last).is_some(),
        (Some((Seg::Key(k), rest)), toml::Value::Table(t)) => {
            t.get_mut(k).is_some_and(|v| remove_in(v, rest, last))
        }
        (Some((Seg::Index(i), rest)), toml::Value::Array(a)) => {
            a.get_mut(*i).is_some_and(|v| remove_in(v, rest, last))
        }
        _ => false,
    }
}

/// `unknown field `x`, expected one of `a`, `b``  → ("x", ["a", "b"]).
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((name.to_string(), expected))
}

/// "unknown key `weigth`; did you mean `weight`?" when one known key is close (at most two
/// edits, transpositions counting one), else the list of known keys.
fn suggest(name: &str, expected: &[String]) -> String {
    let best = expected
        .iter()
        .map(|e| (strsim::damerau_levenshtein(name, e), e))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, e)) if d <= 2 && d < name.len().max(2) => {
            format!("unknown key `{name}`; did you mean `{e}`?")
        }
        _ if expected.is_empty() => format!("unknown key `{name}`"),
        _ => format!(
            "unknown key `{name}`; expected one of {}",
            expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:80\"\n\
        [upstreams.\"api.v2\"]\nqueue = { size = 0 }\n[[upstreams.\"api.v2\".servers]]\n\
        addr = \"a\"\n[[upstreams.\"api.v2\".servers]]\naddr = \"b\"\n  weight = 0\n";

    #[test]
    fn paths_map_to_lines_and_columns() {
        let p = Positions::new(TEXT);
        assert_eq!(p.of("listeners[0].listen"), Some((3, 1)));
        assert_eq!(p.of("upstreams.api.v2.servers[1].weight"), Some((10, 3)));
        assert_eq!(p.of("upstreams.api.v2.queue.size"), Some((5, 11)));
        // A missing field: the enclosing table's header.
        assert_eq!(p.of("upstreams.api.v2.servers[1].max_conns"), Some((8, 1)));
        assert_eq!(p.of("nowhere"), None);
    }

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("a.b[2][3].c"),
            vec![
                Seg::Key("a".into()),
                Seg::Key("b".into()),
                Seg::Index(2),
                Seg::Index(3),
                Seg::Key("c".into())
            ]
        );
    }

    #[test]
    fn every_unknown_key_is_reported_with_a_suggestion() {
        let table: toml::Table = toml::from_str(
            "[runtime]\nworkerz = 1\n[admin]\nlisten = \"127.0.0.1:1\"\nfoo = 1\n\
             [upstreams.a]\n[[upstreams.a.servers]]\naddr = \"x\"\nweigth = 2\n",
        )
        .expect("toml");
        let (file, problems) = deserialize_all(table);
        assert!(file.is_some());
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines.contains(
                &"runtime.workerz: unknown key `workerz`; did you mean `workers`?".to_string()
            ),
            "{lines:?}"
        );
        assert!(
            lines.contains(
                &"upstreams.a.servers[0].weigth: unknown key `weigth`; did you mean `weight`?"
                    .to_string()
            ),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("admin.foo: unknown key `foo`; expected one of `listen`")),
            "{lines:?}"
        );
    }

    #[test]
    fn wrong_types_and_missing_fields_are_reported() {
        let table: toml::Table = toml::from_str(
            "[upstreams.a]\nkeepalive = \"many\"\n[upstreams.a.sticky]\nexpires = \"1h\"\n",
        )
        .expect("toml");
        let (_, problems) = deserialize_all(table);
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(
            lines[0].starts_with("upstreams.a.keepalive: invalid type"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("upstreams.a.sticky: missing field `cookie`"),
            "{lines:?}"
        );
    }
}
