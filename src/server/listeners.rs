//! The listening sockets, as the control thread keeps them: bound at start (or inherited from
//! the process a binary upgrade replaces), changed by reloads, passed on by the next upgrade.
//!
//! A listener's identity is its `listen` address as written in the config, and for port 0
//! (a port of the kernel's choice) its name too (`config::Listener::same_socket`). A reload keeps the sockets of every address it keeps
//! (same sockets, no gap; a new `backlog` is applied with listen(2), which Linux allows on a
//! listening socket), binds the new addresses before anything is published, and drops the
//! rest: the cores stop accepting on them when they move to the new generation. A changed
//! address is a removal plus an addition. A bind failure refuses the whole reload.
//!
//! Each listener has one SO_REUSEPORT socket per core (or more, after an upgrade from a
//! process with more cores). The cores own those sockets; the control thread keeps a copy of
//! each descriptor (a dup: the same socket) so that an upgrade can pass every one of them.

use super::RunError;
use crate::config::Config;
use crate::context::Sockets;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Whether other sockets may bind the same address (one listening socket per core).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Port {
    Exclusive,
    Shared,
}

pub(super) fn bind_one(addr: SocketAddr, backlog: u32, port: Port) -> std::io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if port == Port::Shared {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(backlog as i32)?;
    Ok(s)
}

/// One listener's sockets.
struct Entry {
    /// The `listen` address in the config: the listener's identity.
    addr: SocketAddr,
    /// The address bound (differs from `addr` for port 0).
    local: SocketAddr,
    name: String,
    backlog: u32,
    /// A copy of each socket, for a binary upgrade.
    copies: Vec<OwnedFd>,
    /// The originals, for the cores.
    sockets: Arc<Sockets>,
}

/// Every listener's sockets, in config order, and a copy of the admin listener's socket.
pub(super) struct Listening {
    entries: Vec<Entry>,
    admin: Option<(String, OwnedFd)>,
}

impl Listening {
    /// The sockets of `config`'s listeners for `cores` cores: `inherited` ones where the
    /// previous process passed them, the rest bound here. A first bind without SO_REUSEPORT
    /// proves nobody else (another ringlb included) holds a new address, which SO_REUSEPORT
    /// would hide.
    pub(super) fn bind(
        config: &Config,
        cores: usize,
        inherited: &mut Inherited,
    ) -> Result<Listening, RunError> {
        let mut entries = Vec::new();
        for l in &config.listeners {
            let socks = inherited.take(l);
            let e = bind_entry(&l.name, l.addr, l.backlog, cores, socks)?;
            log::info!("listening on {} {}", l.name, e.local);
            entries.push(e);
        }
        Ok(Listening {
            entries,
            admin: None,
        })
    }

    /// Keeps a copy of the admin listener's socket (`listen` as in the config).
    pub(super) fn set_admin(&mut self, listen: String, socket: &impl std::os::fd::AsFd) {
        let copy = SockRef::from(socket).try_clone();
        match copy {
            Ok(s) => self.admin = Some((listen, s.into())),
            Err(e) => log::warn!("admin listener: cannot keep a copy for a binary upgrade: {e}"),
        }
    }

    /// The sockets of each listener, by `ListenerId`, for the first generation.
    pub(super) fn sockets(&self) -> Box<[Arc<Sockets>]> {
        self.entries.iter().map(|e| e.sockets.clone()).collect()
    }

    /// What `config` needs: the sockets of the addresses it keeps, new ones bound for the
    /// others. Changes nothing here: dropping the plan closes what it bound.
    pub(super) fn plan(&self, config: &Config, cores: usize) -> Result<Plan, RunError> {
        let mut slots = Vec::new();
        let mut kept = vec![false; self.entries.len()];
        for l in &config.listeners {
            let same = |(i, e): &(usize, &Entry)| !kept[*i] && l.same_socket(e.addr, &e.name);
            slots.push(match self.entries.iter().enumerate().find(same) {
                Some((index, e)) => {
                    kept[index] = true;
                    Planned::Kept {
                        index,
                        sockets: e.sockets.clone(),
                    }
                }
                None => Planned::New(bind_entry(&l.name, l.addr, l.backlog, cores, Vec::new())?),
            });
        }
        Ok(Plan { slots })
    }

    /// `plan` (made for `config`) is published: keeps its sockets, closes our copies of the
    /// others, applies a changed backlog.
    pub(super) fn commit(&mut self, plan: Plan, config: &Config) {
        let mut old: Vec<Option<Entry>> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(Some)
            .collect();
        for (slot, l) in plan.slots.into_iter().zip(&config.listeners) {
            let mut e = match slot {
                Planned::Kept { index, .. } => match old.get_mut(index).and_then(Option::take) {
                    Some(e) => e,
                    None => continue,
                },
                Planned::New(e) => {
                    log::info!("listening on {} {}", l.name, e.local);
                    e
                }
            };
            if e.backlog != l.backlog {
                for c in &e.copies {
                    if let Err(err) = SockRef::from(c).listen(l.backlog as i32) {
                        log::warn!(
                            "listener {}: cannot set backlog {}: {err}",
                            l.name,
                            l.backlog
                        );
                    }
                }
                log::info!("listener {}: backlog {}", l.name, l.backlog);
                e.backlog = l.backlog;
            }
            e.name.clone_from(&l.name);
            self.entries.push(e);
        }
        for e in old.into_iter().flatten() {
            log::info!(
                "listener {} {} removed: no longer accepting; its connections finish the \
                 requests in flight",
                e.name,
                e.local
            );
        }
    }

    /// What a binary upgrade passes: the `RINGLB_INHERIT` value (see [`Inherited`]) and the
    /// descriptors it names.
    pub(super) fn to_inherit(&self) -> (String, Vec<RawFd>) {
        let mut text = String::new();
        let mut fds = Vec::new();
        let mut line = |copies: &mut dyn Iterator<Item = RawFd>, kind: &str, key: &str| {
            let list: Vec<String> = copies
                .inspect(|&fd| fds.push(fd))
                .map(|fd| fd.to_string())
                .collect();
            text.push_str(&format!("{} {kind} {key}\n", list.join(",")));
        };
        for e in &self.entries {
            line(
                &mut e.copies.iter().map(AsRawFd::as_raw_fd),
                "listen",
                &format!("{} {}", e.addr, e.name),
            );
        }
        if let Some((listen, fd)) = &self.admin {
            line(&mut std::iter::once(fd.as_raw_fd()), "admin", listen);
        }
        (text, fds)
    }
}

/// The sockets a reload will publish, by `ListenerId` of its config.
pub(super) struct Plan {
    slots: Vec<Planned>,
}

enum Planned {
    Kept { index: usize, sockets: Arc<Sockets> },
    New(Entry),
}

impl Plan {
    pub(super) fn sockets(&self) -> Box<[Arc<Sockets>]> {
        self.slots
            .iter()
            .map(|s| match s {
                Planned::Kept { sockets, .. } => sockets.clone(),
                Planned::New(e) => e.sockets.clone(),
            })
            .collect()
    }
}

/// One listener's sockets for `cores` cores: `inherited` ones (given this backlog), then new
/// ones bound until every core has one. Core `i` serves sockets `i`, `i + cores`, ...
fn bind_entry(
    name: &str,
    addr: SocketAddr,
    backlog: u32,
    cores: usize,
    inherited: Vec<OwnedFd>,
) -> Result<Entry, RunError> {
    let err = |source| RunError::Bind {
        name: name.to_string(),
        addr,
        source,
    };
    let mut socks: Vec<Socket> = inherited.into_iter().map(Socket::from).collect();
    let local = match socks.first() {
        Some(s) => s.local_addr().map_err(err)?,
        None => bind_one(addr, 1, Port::Exclusive)
            .map_err(err)?
            .local_addr()
            .map_err(err)?,
    };
    let local = local.as_socket().unwrap_or(addr);
    for s in &socks {
        s.listen(backlog as i32).map_err(err)?;
    }
    while socks.len() < cores {
        socks.push(bind_one(local, backlog, Port::Shared).map_err(err)?);
    }
    let mut per_core: Vec<Vec<std::net::TcpListener>> = (0..cores).map(|_| Vec::new()).collect();
    let mut copies = Vec::new();
    for (i, s) in socks.into_iter().enumerate() {
        copies.push(s.try_clone().map_err(err)?.into());
        per_core[i % cores.max(1)].push(s.into());
    }
    Ok(Entry {
        addr,
        local,
        name: name.to_string(),
        backlog,
        copies,
        sockets: Arc::new(Sockets::new(per_core)),
    })
}

/// Listening sockets passed by the process a binary upgrade replaces, in `RINGLB_INHERIT`:
/// one line per listener, `FD[,FD...] listen ADDR NAME` (the `listen` address and name in its
/// config) or `FD admin LISTEN` (`admin.listen`). Only descriptors that are listening sockets are taken;
/// those this config has no use for are closed.
#[derive(Default)]
pub(super) struct Inherited {
    /// `listen` address, name, sockets.
    listeners: Vec<(SocketAddr, String, Vec<OwnedFd>)>,
    admin: Option<(String, OwnedFd)>,
}

pub(super) const INHERIT_ENV: &str = "RINGLB_INHERIT";

impl Inherited {
    pub(super) fn from_env() -> Inherited {
        match std::env::var(INHERIT_ENV) {
            Ok(text) => Inherited::parse(&text),
            Err(_) => Inherited::default(),
        }
    }

    fn parse(text: &str) -> Inherited {
        let mut out = Inherited::default();
        let mut seen = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut parts = line.splitn(3, ' ');
            let (Some(fds), Some(kind), Some(key)) = (parts.next(), parts.next(), parts.next())
            else {
                log::warn!("{INHERIT_ENV}: ignored {line:?}");
                continue;
            };
            let mut owned = Vec::new();
            for fd in fds.split(',') {
                match fd.parse::<RawFd>().ok().filter(|fd| !seen.contains(fd)) {
                    Some(fd) => match adopt(fd) {
                        Some(s) => {
                            seen.push(fd);
                            owned.push(s);
                        }
                        None => log::warn!("{INHERIT_ENV}: {fd} is not a listening socket"),
                    },
                    None => log::warn!("{INHERIT_ENV}: ignored descriptor {fd:?}"),
                }
            }
            let listen = key.split_once(' ');
            match (kind, listen.and_then(|(a, n)| Some((a.parse().ok()?, n)))) {
                ("listen", Some((addr, name))) => {
                    out.listeners.push((addr, name.to_string(), owned))
                }
                ("admin", _) => out.admin = owned.pop().map(|s| (key.to_string(), s)),
                _ => log::warn!("{INHERIT_ENV}: ignored {line:?}"),
            }
        }
        out
    }

    /// The sockets inherited for listener `l` (see `Listener::same_socket`) whose bound
    /// address fits it.
    fn take(&mut self, l: &crate::config::Listener) -> Vec<OwnedFd> {
        let Some(i) = self
            .listeners
            .iter()
            .position(|(a, name, _)| l.same_socket(*a, name))
        else {
            return Vec::new();
        };
        let addr = l.addr;
        let (_, _, socks) = self.listeners.swap_remove(i);
        let fits = |s: &OwnedFd| {
            SockRef::from(s)
                .local_addr()
                .ok()
                .and_then(|l| l.as_socket())
                .is_some_and(|l| {
                    l.ip() == addr.ip() && (addr.port() == 0 || l.port() == addr.port())
                })
        };
        let (fit, other): (Vec<_>, Vec<_>) = socks.into_iter().partition(fits);
        if !other.is_empty() {
            log::warn!(
                "{INHERIT_ENV}: {} sockets for {addr} are bound elsewhere; closed",
                other.len()
            );
        }
        if !fit.is_empty() {
            log::info!("{addr}: {} sockets inherited", fit.len());
        }
        fit
    }

    /// The admin socket inherited for `listen` (as written in the config).
    pub(super) fn take_admin(&mut self, listen: &str) -> Option<OwnedFd> {
        match self.admin.take() {
            Some((key, s)) if key == listen => {
                log::info!("admin {listen}: socket inherited");
                Some(s)
            }
            Some(_) | None => None,
        }
    }

    /// Closes what this config did not take, saying so.
    pub(super) fn close_rest(self) {
        for (addr, _, socks) in self.listeners {
            if !socks.is_empty() {
                log::info!(
                    "{addr}: not in this config; closed the {} inherited sockets",
                    socks.len()
                );
            }
        }
        if let Some((listen, _)) = self.admin {
            log::info!("admin {listen}: admin.listen changed; closed the inherited socket");
        }
    }
}

/// Takes `fd` when it is a listening socket, close-on-exec again (it was cleared for the
/// exec only).
fn adopt(fd: RawFd) -> Option<OwnedFd> {
    if fd <= 2 {
        return None;
    }
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one c_int into `listening` (its size in `len`); on a
    // descriptor that is not an open socket it fails and writes nothing.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || listening == 0 {
        return None;
    }
    // SAFETY: `fd` is an open listening socket that the previous process passed to this one
    // for this purpose only: nothing else in this process owns it (ringlb opens no listening
    // socket before this), and `parse` takes each number once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fcntl on the descriptor we now own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(pairs: &[(&str, String)]) -> Config {
        let mut text = String::new();
        for (name, listen) in pairs {
            text.push_str(&format!(
                "[[listeners]]\nname = \"{name}\"\nlisten = \"{listen}\"\n\
                 [[routes]]\nlistener = \"{name}\"\nupstream = \"app\"\n"
            ));
        }
        text.push_str("[upstreams.app]\n[[upstreams.app.servers]]\naddr = \"127.0.0.1:9\"\n");
        Config::parse(&text).expect("config")
    }

    #[test]
    fn what_is_not_a_listening_socket_is_left_alone() {
        // stdin, and a number nobody opened.
        let i = Inherited::parse("0,999999 listen 127.0.0.1:80 a\nx admin 127.0.0.1:9\nbad\n");
        assert_eq!(i.listeners.len(), 1);
        assert!(i.listeners[0].2.is_empty());
        assert!(i.admin.is_none());
    }

    #[test]
    fn a_listening_socket_is_taken_once_by_its_address_or_port_0_and_name() {
        let s = bind_one("127.0.0.1:0".parse().unwrap(), 8, Port::Exclusive).unwrap();
        let local = s.local_addr().unwrap().as_socket().unwrap();
        let any = bind_one("127.0.0.1:0".parse().unwrap(), 8, Port::Exclusive).unwrap();
        // The test gives up its descriptors as a parent process would.
        let fd = std::os::fd::IntoRawFd::into_raw_fd(OwnedFd::from(s));
        let fd0 = std::os::fd::IntoRawFd::into_raw_fd(OwnedFd::from(any));
        let mut i = Inherited::parse(&format!(
            "{fd},{fd} listen {local} old-name\n{fd0} listen 127.0.0.1:0 zero\n"
        ));
        let c = listeners(&[
            ("other", "127.0.0.1:1".into()),
            ("renamed", local.to_string()),
            ("a", "127.0.0.1:0".into()),
            ("zero", "127.0.0.1:0".into()),
        ]);
        assert!(i.take(&c.listeners[0]).is_empty());
        assert_eq!(i.take(&c.listeners[1]).len(), 1);
        assert!(i.take(&c.listeners[1]).is_empty());
        // Port 0: by name.
        assert!(i.take(&c.listeners[2]).is_empty());
        assert_eq!(i.take(&c.listeners[3]).len(), 1);
    }

    #[test]
    fn a_reload_keeps_the_sockets_of_the_listeners_it_keeps() {
        let port = |l: &Listening, i: usize| l.entries[i].local.port();
        let old = listeners(&[("a", "127.0.0.1:0".into()), ("b", "127.0.0.1:0".into())]);
        let mut l = Listening::bind(&old, 2, &mut Inherited::default()).unwrap();
        let (a, b) = (port(&l, 0), port(&l, 1));
        let new = listeners(&[
            ("b", "127.0.0.1:0".into()),
            ("c", "127.0.0.1:0".into()),
            ("a2", "127.0.0.1:0".into()),
        ]);
        let plan = l.plan(&new, 2).unwrap();
        let sockets = plan.sockets();
        assert!(Arc::ptr_eq(&sockets[0], &l.entries[1].sockets));
        l.commit(plan, &new);
        assert_eq!(l.entries.len(), 3);
        assert_eq!(port(&l, 0), b);
        // Port 0 under another name is another listener: a is gone, its port free again.
        assert!(port(&l, 1) != a && port(&l, 2) != a);
        assert!(std::net::TcpListener::bind(("127.0.0.1", a)).is_ok());
        assert_eq!(l.to_inherit().1.len(), 6);
    }
}
