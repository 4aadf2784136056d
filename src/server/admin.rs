//! Binding the admin listener, on the main thread before any worker starts: a TCP socket, or a
//! Unix socket with its mode and owner set before it listens (HAProxy's stats socket). A stale
//! socket file (left by a process that is gone) is replaced; a live one, or a file that is not
//! a socket, is a startup error naming the path. After a binary upgrade the socket is the one
//! the previous process passed on, when `admin.listen` is the same.

use super::listeners::{bind_one, Inherited, Port};
use super::RunError;
use crate::config::AdminListen;
use socket2::{Domain, SockAddr, Type};
use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

/// The bound admin listener, handed to worker 0.
pub(crate) enum Socket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Socket {
    /// On worker 0.
    pub(crate) fn into_listener(self) -> crate::engine::Listener {
        match self {
            Socket::Tcp(l) => crate::engine::Listener::from_std(l),
            Socket::Unix(l) => crate::engine::Listener::from_std_unix(l),
        }
    }
}

impl std::os::fd::AsFd for Socket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Socket::Tcp(l) => l.as_fd(),
            Socket::Unix(l) => l.as_fd(),
        }
    }
}

pub(super) fn bind(listen: &AdminListen, inherited: &mut Inherited) -> Result<Socket, RunError> {
    let err = |reason: String| RunError::Admin {
        listen: listen.to_string(),
        reason,
    };
    if let Some(fd) = inherited.take_admin(&listen.to_string()) {
        return Ok(match listen {
            AdminListen::Tcp(addr) => {
                let l = std::net::TcpListener::from(fd);
                log::info!("admin listening on {}", l.local_addr().unwrap_or(*addr));
                Socket::Tcp(l)
            }
            AdminListen::Unix { path, .. } => {
                log::info!("admin listening on unix:{}", path.display());
                Socket::Unix(fd.into())
            }
        });
    }
    match listen {
        AdminListen::Tcp(addr) => {
            let s = bind_one(*addr, 128, Port::Exclusive).map_err(|e| err(e.to_string()))?;
            let local = s
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .unwrap_or(*addr);
            log::info!("admin listening on {local}");
            Ok(Socket::Tcp(s.into()))
        }
        AdminListen::Unix {
            path,
            mode,
            owner,
            group,
        } => {
            remove_stale(path).map_err(err)?;
            let s = socket2::Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)
                .map_err(|e| err(e.to_string()))?;
            let addr = SockAddr::unix(path).map_err(|e| err(e.to_string()))?;
            s.bind(&addr).map_err(|e| err(e.to_string()))?;
            // Mode and owner before listen: nobody connects while the file is wider open.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
                .map_err(|e| err(format!("socket_mode: {e}")))?;
            let uid = owner
                .as_deref()
                .map(|o| user_id(o).ok_or_else(|| err(format!("socket_owner: no user {o:?}"))))
                .transpose()?;
            let gid = group
                .as_deref()
                .map(|g| group_id(g).ok_or_else(|| err(format!("socket_group: no group {g:?}"))))
                .transpose()?;
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::chown(path, uid, gid)
                    .map_err(|e| err(format!("socket_owner/socket_group: {e}")))?;
            }
            s.listen(128).map_err(|e| err(e.to_string()))?;
            log::info!("admin listening on unix:{}", path.display());
            let fd: std::os::fd::OwnedFd = s.into();
            Ok(Socket::Unix(fd.into()))
        }
    }
}

/// Removes a socket file nobody listens on; refuses a live socket or any other file.
fn remove_stale(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err("the path exists and is not a socket".into());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err("another process listens on this socket".into());
    }
    std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket: {e}"))
}

/// A user name or numeric id.
fn user_id(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let c = CString::new(name).ok()?;
    // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids); getpwnam_r fills it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut out = std::ptr::null_mut();
    // SAFETY: getpwnam_r writes into `pwd` and `buf`, both live and of the sizes passed.
    let rc =
        unsafe { libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out) };
    (rc == 0 && !out.is_null()).then_some(pwd.pw_uid)
}

/// A group name or numeric id.
fn group_id(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let c = CString::new(name).ok()?;
    // SAFETY: all-zero is a valid `group` (null pointers, zero ids); getgrnam_r fills it.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut out = std::ptr::null_mut();
    // SAFETY: getgrnam_r writes into `grp` and `buf`, both live and of the sizes passed.
    let rc =
        unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    (rc == 0 && !out.is_null()).then_some(grp.gr_gid)
}
