//! Validation of what ringlb adds to or lets through on forwarded requests: the `Via` name
//! (`[proxy] via`) and the upgrades a route allows (`[[routes]] upgrade`).

use super::file::ViaFile;
use super::Problem;
use crate::http1::{is_protocol_name, is_via_name, Upgrades};

/// Used when the host name is not a valid Via name.
const FALLBACK_VIA: &str = "ringlb";

/// `via = "name"`, `true` (the default: the host name) or `false` (None).
pub(super) fn via(file: Option<&ViaFile>, problems: &mut Vec<Problem>) -> Option<Box<[u8]>> {
    match file {
        Some(ViaFile::Switch(false)) => None,
        None | Some(ViaFile::Switch(true)) => {
            let name = host_name()
                .filter(|h| is_via_name(h.as_bytes()))
                .unwrap_or_else(|| FALLBACK_VIA.into());
            Some(name.into_bytes().into())
        }
        Some(ViaFile::Name(name)) if is_via_name(name.as_bytes()) => Some(name.as_bytes().into()),
        Some(ViaFile::Name(name)) => {
            problems.push(Problem {
                path: "proxy.via".into(),
                message: format!(
                    "{name:?} is not a Via name: use letters, digits and -._~!#$%&'*+^`| \
                     (no spaces, commas or colons), at most 255 bytes; or false"
                ),
            });
            None
        }
    }
}

/// `upgrade = ["websocket", ...]` of the route at `path` (default: websocket only).
pub(super) fn upgrades(
    path: &str,
    file: Option<&[String]>,
    problems: &mut Vec<Problem>,
) -> Upgrades {
    let Some(names) = file else {
        return Upgrades::default();
    };
    for (i, name) in names.iter().enumerate() {
        let at = format!("{path}.upgrade[{i}]");
        let lower = name.to_ascii_lowercase();
        if !is_protocol_name(name.as_bytes()) {
            problems.push(Problem {
                path: at,
                message: format!(
                    "{name:?} is not a protocol name (a token without '/' or spaces, \
                     e.g. \"websocket\")"
                ),
            });
        } else if names[..i].iter().any(|n| n.eq_ignore_ascii_case(&lower)) {
            problems.push(Problem {
                path: at,
                message: format!("{name:?} is listed twice"),
            });
        } else if lower == "h2c" {
            log::warn!(
                "{at}: h2c upgrades are tunnelled: HTTP/2 streams on such a connection reach \
                 the server without ringlb's routing (h2c smuggling)"
            );
        }
    }
    Upgrades::new(names.iter().map(|n| n.as_bytes()))
}

/// The machine's host name (`gethostname`), the default Via name: distinct per node, so two
/// ringlb tiers in a chain do not take each other for a loop.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes, the length passed; gethostname
    // writes at most that many and does not keep the pointer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&buf[..len]).ok().map(str::to_owned)
}
