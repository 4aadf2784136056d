//! Validation of what a route changes in the traffic it serves (`[[routes]]`):
//! `client_max_body_size`, `request_headers` / `response_headers`, `strip_prefix` /
//! `rewrite_prefix`, and `return` (a fixed answer instead of an upstream).

use super::file::{HeaderEditsFile, ReturnFile, RouteFile};
use super::validate::parse_size;
use super::{Problem, Traffic};
use crate::http1::{refused_name, Edit, Field, HeaderEdits, PrefixRewrite, Return, Template, Var};

fn problem(problems: &mut Vec<Problem>, path: String, message: impl Into<String>) {
    problems.push(Problem {
        path,
        message: message.into(),
    });
}

/// The traffic settings of the route at `path`.
pub(super) fn traffic(path: &str, r: &RouteFile, problems: &mut Vec<Problem>) -> Traffic {
    let max_body = r.client_max_body_size.as_deref().and_then(|text| {
        let parsed = parse_size(text).map(|n| n as u64);
        if parsed.is_none() {
            problem(
                problems,
                format!("{path}.client_max_body_size"),
                format!("invalid size {text:?}; write e.g. \"1MiB\" (0: no body at all)"),
            );
        }
        parsed
    });
    let request_headers = r
        .request_headers
        .as_ref()
        .map(|e| {
            edits(
                &format!("{path}.request_headers"),
                e,
                Side::Request,
                problems,
            )
        })
        .filter(|e| !e.is_empty());
    let response_headers = r
        .response_headers
        .as_ref()
        .map(|e| {
            edits(
                &format!("{path}.response_headers"),
                e,
                Side::Response,
                problems,
            )
        })
        .filter(|e| !e.is_empty());
    let prefix = prefix(path, r, problems);
    let answer = r.answer.as_ref().and_then(|a| answer(path, a, problems));
    Traffic {
        max_body,
        prefix,
        request_headers,
        response_headers,
        answer,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

fn edits(
    path: &str,
    file: &HeaderEditsFile,
    side: Side,
    problems: &mut Vec<Problem>,
) -> HeaderEdits {
    let mut seen: Vec<String> = Vec::new();
    let mut check_name = |problems: &mut Vec<Problem>, at: String, name: &str| -> bool {
        if let Some(why) = refused_name(name) {
            problem(problems, at, format!("{name:?} {why}"));
            return false;
        }
        let lower = name.to_ascii_lowercase();
        if seen.contains(&lower) {
            problem(problems, at, format!("{name:?} is edited twice"));
            return false;
        }
        seen.push(lower);
        true
    };
    let mut fields = Vec::new();
    for (list, kind, edit) in [(&file.set, "set", Edit::Set), (&file.add, "add", Edit::Add)] {
        for (name, value) in list {
            let at = format!("{path}.{kind}.{name}");
            if !check_name(problems, at.clone(), name) {
                continue;
            }
            match Template::parse(value) {
                Ok(t) if side == Side::Request && t.uses(Var::ServerName) => problem(
                    problems,
                    at,
                    "$server_name is known only once a server answered: response_headers only",
                ),
                Ok(t) => fields.push(Field {
                    name: name.as_bytes().into(),
                    value: t,
                    edit,
                }),
                Err(m) => problem(problems, at, m),
            }
        }
    }
    let mut remove = Vec::new();
    for (i, name) in file.remove.iter().enumerate() {
        if check_name(problems, format!("{path}.remove[{i}]"), name) {
            remove.push(name.as_bytes().into());
        }
    }
    HeaderEdits {
        fields: fields.into(),
        remove: remove.into(),
    }
}

fn is_path(p: &str) -> bool {
    p.starts_with('/')
        && !p
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#')
}

fn prefix(path: &str, r: &RouteFile, problems: &mut Vec<Problem>) -> Option<PrefixRewrite> {
    let strip = r.strip_prefix.as_deref();
    let replace = r.rewrite_prefix.as_deref();
    if let Some(s) = strip.filter(|s| !is_path(s)) {
        problem(
            problems,
            format!("{path}.strip_prefix"),
            format!("{s:?} must start with '/' and contain no spaces, '?' or '#'"),
        );
        return None;
    }
    if let Some(s) = replace.filter(|s| !s.is_empty() && !is_path(s)) {
        problem(
            problems,
            format!("{path}.rewrite_prefix"),
            format!("{s:?} must be empty or start with '/' and contain no spaces, '?' or '#'"),
        );
        return None;
    }
    match (strip, replace) {
        (None, None) => None,
        (None, Some(_)) => {
            problem(
                problems,
                format!("{path}.rewrite_prefix"),
                "replaces strip_prefix: set strip_prefix too (e.g. the route's path)",
            );
            None
        }
        (Some(s), r) => Some(PrefixRewrite {
            strip: s.as_bytes().into(),
            replace: r.unwrap_or("").as_bytes().into(),
        }),
    }
}

fn answer(path: &str, a: &ReturnFile, problems: &mut Vec<Problem>) -> Option<Return> {
    let at = format!("{path}.return");
    let redirect = matches!(a.status, 301 | 302 | 303 | 307 | 308);
    let status = match u16::try_from(a.status) {
        Ok(s) if (200..=599).contains(&s) => s,
        _ => {
            problem(problems, format!("{at}.status"), "must be 200..=599");
            return None;
        }
    };
    let location = match (&a.location, redirect) {
        (Some(l), true) => match Template::parse(l) {
            Ok(t) if t.uses(Var::ServerName) => {
                problem(
                    problems,
                    format!("{at}.location"),
                    "no server answers a return route: $server_name is unknown",
                );
                return None;
            }
            Ok(t) => Some(t),
            Err(m) => {
                problem(problems, format!("{at}.location"), m);
                return None;
            }
        },
        (None, true) => {
            problem(
                problems,
                format!("{at}.location"),
                format!("a {status} redirect needs a location"),
            );
            return None;
        }
        (Some(_), false) => {
            problem(
                problems,
                format!("{at}.location"),
                "only a redirect (301, 302, 303, 307, 308) has a location",
            );
            return None;
        }
        (None, false) => None,
    };
    let body = a.body.as_deref().unwrap_or("");
    if !body.is_empty() && matches!(status, 204 | 304) {
        problem(
            problems,
            format!("{at}.body"),
            format!("a {status} response has no body"),
        );
        return None;
    }
    Some(Return {
        status,
        location,
        body: body.as_bytes().into(),
    })
}
