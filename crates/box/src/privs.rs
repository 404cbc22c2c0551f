//! Dropping root after the sockets are bound, for firmware that starts daemons as root.
use nix::unistd::{chown, geteuid, setgid, setgroups, setuid, Gid, Group, Uid, User};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("server.user {0:?}: no such user")]
    UnknownUser(String),
    #[error("server.group {0:?}: no such group")]
    UnknownGroup(String),
    #[error("server.user is set but boxapi was not started as root (nor as that user)")]
    NotRoot,
    #[error("cannot hand {0} to the unprivileged user: {1}")]
    Chown(String, nix::Error),
    #[error("dropping privileges failed: {0}")]
    Drop(nix::Error),
    #[error("root could be regained after dropping privileges; refusing to run")]
    Regained,
    #[error("cannot keep CAP_NET_BIND_SERVICE across the drop: {0}")]
    Capability(String),
}

/// Resolves the configured user and group (the user's primary group when none is given).
pub fn resolve(user: &str, group: Option<&str>) -> Result<(Uid, Gid), PrivError> {
    let u = User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| PrivError::UnknownUser(user.to_owned()))?;
    let gid = match group {
        Some(g) => {
            Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| PrivError::UnknownGroup(g.to_owned()))?
                .gid
        }
        None => u.gid,
    };
    Ok((u.uid, gid))
}

/// Gives `writable` paths to the user, then becomes it for good, keeping one capability:
/// CAP_NET_BIND_SERVICE, so that `ctl enable` and LAN addresses that appear later can still bind
/// port 443. Every other capability is dropped, and it checks that root is gone.
pub fn drop_to(user: &str, group: Option<&str>, writable: &[&Path]) -> Result<(), PrivError> {
    let (uid, gid) = resolve(user, group)?;
    if !geteuid().is_root() {
        return if geteuid() == uid {
            Ok(())
        } else {
            Err(PrivError::NotRoot)
        };
    }
    for p in writable.iter().filter(|p| p.exists()) {
        chown(*p, Some(uid), Some(gid))
            .map_err(|e| PrivError::Chown(p.display().to_string(), e))?;
    }
    setgroups(&[gid]).map_err(PrivError::Drop)?;
    setgid(gid).map_err(PrivError::Drop)?;
    // Without KEEPCAPS, setuid from root to a user empties the permitted set.
    nix::sys::prctl::set_keepcaps(true).map_err(PrivError::Drop)?;
    setuid(uid).map_err(PrivError::Drop)?;
    keep_only_bind_capability()?;
    if setuid(Uid::from_raw(0)).is_ok() || geteuid().is_root() {
        return Err(PrivError::Regained);
    }
    Ok(())
}

/// After the setuid: permitted and effective sets reduced to CAP_NET_BIND_SERVICE, nothing
/// inheritable or ambient, KEEPCAPS off again.
fn keep_only_bind_capability() -> Result<(), PrivError> {
    use caps::{CapSet, Capability, CapsHashSet};
    let err = |e: caps::errors::CapsError| PrivError::Capability(e.to_string());
    let bind: CapsHashSet = [Capability::CAP_NET_BIND_SERVICE].into_iter().collect();
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(err)?;
    caps::set(None, CapSet::Permitted, &bind).map_err(err)?;
    caps::set(None, CapSet::Effective, &bind).map_err(err)?;
    // Not on every kernel (ambient capabilities are Linux 4.3+); nothing to clear without them.
    let _ = caps::clear(None, CapSet::Ambient);
    nix::sys::prctl::set_keepcaps(false).map_err(PrivError::Drop)?;
    Ok(())
}
