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

/// Gives `writable` paths to the user, then becomes it for good, and checks that root is gone.
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
    setuid(uid).map_err(PrivError::Drop)?;
    if setuid(Uid::from_raw(0)).is_ok() || geteuid().is_root() {
        return Err(PrivError::Regained);
    }
    Ok(())
}
