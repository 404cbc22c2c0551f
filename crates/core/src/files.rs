//! Files the daemons and their tools write (private keys, readable by their owner only, and
//! state replaced atomically) and the files a configuration names, read within a size limit.
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Size limits of the files [`read_limited`] reads, per kind. Each is many times what a real file
/// of its kind holds, and small enough that a mistaken path (a disk image, a log, a device) is
/// refused rather than read into memory.
pub mod limit {
    /// The configuration file itself: 1 MiB (a configuration with a hundred tools is a few tens
    /// of KiB).
    pub const CONFIG: u64 = 1 << 20;
    /// A PEM certificate chain, CA bundle or private key: 1 MiB (a system's whole CA bundle is
    /// about 200 KiB).
    pub const PEM: u64 = 1 << 20;
    /// A JWK or JWKS file: 1 MiB (a JWKS of a hundred RSA-4096 keys is about 100 KiB).
    pub const JWK: u64 = 1 << 20;
    /// A PEM CRL file: 32 MiB (a CA that revoked several hundred thousand devices).
    pub const CRL: u64 = 32 << 20;
    /// The operator-signed tool registry (a JWS): 4 MiB.
    pub const REGISTRY: u64 = 4 << 20;
    /// A secret (TSIG or EAB key, Redis password) or an ACME account's credentials: 64 KiB.
    pub const SECRET: u64 = 64 << 10;
    /// A hosts file the box keeps its own lines in (possibly `/etc/hosts`, which some systems
    /// fill with block lists): 16 MiB.
    pub const HOSTS: u64 = 16 << 20;
    /// A small state file of the daemon's own (a version number): 4 KiB.
    pub const STATE_SMALL: u64 = 4 << 10;
}

/// Why [`read_limited`] refused or failed to read a file; `Display` is the reason operators read
/// after the configuration key and the path.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A directory, named pipe, device or socket: never opened (a FIFO blocks in open(2) until
    /// a writer comes, a device such as /dev/zero never ends).
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("larger than {}, the limit for this file", human(*.limit))]
    TooLarge { limit: u64 },
    #[error("not UTF-8 text")]
    NotText,
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
}

impl ReadError {
    /// Whether the file does not exist (some callers treat that as "nothing yet").
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// `1 MiB`, `64 KiB`, or plain bytes.
fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// Refuses what is not a regular file of at most `limit` bytes.
fn check(meta: &std::fs::Metadata, limit: u64) -> Result<(), ReadError> {
    let t = meta.file_type();
    if t.is_file() && meta.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let what = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    };
    Err(ReadError::NotRegular(what))
}

/// Reads a file a configuration (or a control command) names: a regular file (symbolic links
/// followed) of at most `limit` bytes (see [`limit`]), else an error saying which it is not.
/// The type is looked at before the file is opened, so that a named pipe or a device is refused
/// without blocking; the file is then opened non-blocking and looked at again, should it have
/// been replaced in between, and read no further than the limit, should it be growing.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let meta = std::fs::metadata(path)?;
    check(&meta, limit)?;
    // O_NONBLOCK changes nothing for a regular file's reads; O_NOCTTY: no terminal swapped in
    // between becomes the daemon's.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)?;
    check(&file.metadata()?, limit)?;
    // At most `limit` was announced; the capacity is a hint, the `take` the bound.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

/// [`read_limited`], for a text file (JWK, secrets, version numbers).
pub fn read_text_limited(path: &Path, limit: u64) -> Result<String, ReadError> {
    String::from_utf8(read_limited(path, limit)?).map_err(|_| ReadError::NotText)
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes a file created with mode 0600 (there is no moment when others could read it).
pub fn write_private(path: &Path, content: &[u8]) -> Result<(), FileError> {
    let err = |source| FileError {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(content).map_err(err)
}

/// The directory a file named by `path` sits in: "." for a bare file name, whose parent is the
/// empty path (`--config authority.toml`); the empty path names no directory to sync, stage in,
/// or resolve a configuration's relative paths against.
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Where [`stage`] writes first: beside `path` (a rename never crosses file systems), hidden,
/// named per process and per write, so that two writers (`boxapi enrol` by hand and the daemon's
/// renewal, or two tasks of one daemon) never write into, or rename, each other's file.
fn staging_path(path: &Path) -> PathBuf {
    // usize, not u64: MIPS32 boxes have no 64-bit atomics. A count that wraps after 2^32 writes
    // only reuses the name of a staging file long committed or removed.
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// A file written whole and flushed to disk beside its destination, not in place yet: see
/// [`Staged::commit`]. Dropped before it is placed, it is removed.
#[must_use = "a staged file is removed unless it is committed or renamed"]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    placed: bool,
}

/// Writes `content` for `path` to a staging file created with exactly `mode` (whatever the
/// umask) and fsyncs it; nothing is left behind on failure.
pub fn stage(path: &Path, content: &[u8], mode: u32) -> Result<Staged, FileError> {
    let err = |source| FileError {
        path: path.to_path_buf(),
        source,
    };
    let tmp = staging_path(path);
    // One left by a power cut under the same process id (pids repeat from boot to boot) is ours;
    // anything else standing there (a directory, a link) is not, and makes the write fail.
    if std::fs::symlink_metadata(&tmp).is_ok_and(|m| m.is_file()) {
        let _ = std::fs::remove_file(&tmp);
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    let staged = Staged {
        tmp,
        path: path.to_path_buf(),
        placed: false,
    };
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(content))
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    Ok(staged)
}

impl Staged {
    /// Renames the staged file over its destination: readers see the old file or the new one,
    /// never half of either. Durable once the directory is synced ([`sync_parent`]).
    pub fn rename(mut self) -> Result<(), FileError> {
        std::fs::rename(&self.tmp, &self.path).map_err(|source| FileError {
            path: self.path.clone(),
            source,
        })?;
        self.placed = true;
        Ok(())
    }

    /// [`Staged::rename`], then the directory synced, so that a power cut leaves the old file or
    /// the new one.
    pub fn commit(self) -> Result<(), FileError> {
        let path = self.path.clone();
        self.rename()?;
        sync_parent(&path)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Syncs the directory holding `path`, which makes a rename in it durable.
pub fn sync_parent(path: &Path) -> Result<(), FileError> {
    std::fs::File::open(parent(path))
        .and_then(|d| d.sync_all())
        .map_err(|source| FileError {
            path: path.to_path_buf(),
            source,
        })
}

/// Creates `dir` and whichever of its parents are missing, each one made durable by syncing the
/// directory it was created in: a state directory created at a box's first start, then a `ctl`
/// change written in it and acknowledged, must not vanish with that change at a power cut.
pub fn create_dir_durable(dir: &Path) -> Result<(), FileError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FileError { path, source }
    };
    let mut missing = Vec::new();
    let mut at = dir;
    // Bounded by the path's components.
    while std::fs::symlink_metadata(at).is_err() {
        missing.push(at);
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => sync_parent(d)?,
            // Made meanwhile by someone else, who syncs it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(d)(e)),
        }
    }
    // Whatever stands there must be a directory.
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(err(dir)(std::io::Error::from(
            std::io::ErrorKind::NotADirectory,
        ))),
        Err(e) => Err(err(dir)(e)),
    }
}

/// A directory of a daemon's own holds at most a few files; this bounds what a start looks at.
const MAX_SCAN: usize = 4096;

/// The writer's process id in a name [`staging_path`] made (`.NAME.PID.N.tmp`).
fn staging_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (rest, n) = rest.rsplit_once('.')?;
    let (file, pid) = rest.rsplit_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if file.is_empty() || !digits(n) || !digits(pid) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the staging files that writers killed mid-write (a power cut, kill -9) left in
/// `dir`, a directory of this daemon's own: those of processes no longer running, and this
/// process's, so it must run before this process writes there. A new name per process and per
/// write means nothing else ever removes them, and every cut during a write would leave one more
/// on the flash. Returns how many it removed. Without /proc nothing is known dead: none is.
pub fn remove_stale_staging(dir: &Path) -> usize {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let me = std::process::id();
    let mut removed = 0;
    for entry in entries.take(MAX_SCAN).flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(staging_pid) else {
            continue;
        };
        if pid != me && proc.join(pid.to_string()).exists() {
            continue;
        }
        // A regular file only: whatever else has such a name is not ours.
        if entry.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Replaces `path` atomically with `content`, with exactly `mode`: a staging file in the same
/// directory, fsynced, renamed over the old one, then the directory fsynced ([`stage`],
/// [`Staged::commit`]). Every file the daemons replace is written this way.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), FileError> {
    stage(path, content, mode)?.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("boxapi-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Runs `f` on another thread; fails instead of hanging when it does not return in 5 s.
    fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the read did not return within 5 s")
    }

    #[test]
    fn reads_a_regular_file_within_its_limit() {
        let dir = temp("regular");
        let p = dir.join("cert.pem");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_limited(&p, 10).unwrap(), b"0123456789");
        assert_eq!(read_text_limited(&p, 1 << 20).unwrap(), "0123456789");
        // Through a symbolic link too.
        std::os::unix::fs::symlink(&p, dir.join("link.pem")).unwrap();
        assert_eq!(
            read_limited(&dir.join("link.pem"), 10).unwrap(),
            b"0123456789"
        );
        std::fs::write(&p, b"\xff\xfe").unwrap();
        assert!(matches!(read_text_limited(&p, 10), Err(ReadError::NotText)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_file_over_its_limit() {
        let dir = temp("large");
        let p = dir.join("big.pem");
        std::fs::write(&p, vec![b'a'; 11]).unwrap();
        let e = read_limited(&p, 10).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { limit: 10 }), "{e}");
        assert_eq!(
            e.to_string(),
            "larger than 10 bytes, the limit for this file"
        );
        std::fs::write(&p, vec![b'a'; (1 << 20) + 1]).unwrap();
        assert_eq!(
            read_limited(&p, limit::PEM).unwrap_err().to_string(),
            "larger than 1 MiB, the limit for this file"
        );
        assert_eq!(human(limit::SECRET), "64 KiB");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_named_pipe_without_blocking() {
        let dir = temp("fifo");
        let p = dir.join("cert.pem");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = promptly(move || read_limited(&p, limit::PEM));
        let e = e.unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a named pipe)");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_devices_directories_and_reports_missing_files() {
        let e = promptly(|| read_limited(Path::new("/dev/zero"), limit::PEM)).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a character device)");
        let e = read_limited(Path::new("/"), limit::PEM).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a directory)");
        let e = read_limited(Path::new("/nonexistent/boxapi"), limit::PEM).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().starts_with("cannot read: "), "{e}");
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn atomic_write_replaces_whole_with_its_mode_and_leaves_no_temporary() {
        let dir = temp("atomic");
        let p = dir.join("x.json");
        write_atomic(&p, b"a longer first content", 0o644).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // The mode asked for, not the old file's, nor what the umask leaves of it.
        assert_eq!(mode(&p), 0o600);
        write_atomic(&p, b"three", 0o644).unwrap();
        assert_eq!(mode(&p), 0o644);
        assert_eq!(names(&dir), ["x.json"]);
        assert!(write_atomic(&dir.join("missing/x"), b"", 0o600).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = temp("atomic-failed");
        // Renaming a file over a directory that holds something fails after the staging file
        // was written: it must go.
        let p = dir.join("busy");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("inside"), b"kept").unwrap();
        let e = write_atomic(&p, b"new", 0o600).unwrap_err();
        assert_eq!(e.path, p);
        assert_eq!(names(&dir), ["busy"]);
        assert_eq!(std::fs::read(p.join("inside")).unwrap(), b"kept");
        // A staged file dropped before it is placed is removed; the destination is untouched.
        let q = dir.join("q");
        std::fs::write(&q, b"old").unwrap();
        let staged = stage(&q, b"new", 0o600).unwrap();
        assert_eq!(names(&dir).len(), 3);
        drop(staged);
        assert_eq!(names(&dir), ["busy", "q"]);
        assert_eq!(std::fs::read(&q).unwrap(), b"old");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durable_directories_are_made_with_their_parents() {
        let dir = temp("mkdir");
        let deep = dir.join("a/b/c");
        create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        // Again: nothing to do.
        create_dir_durable(&deep).unwrap();
        std::fs::write(dir.join("file"), b"x").unwrap();
        assert!(create_dir_durable(&dir.join("file")).is_err());
        assert!(create_dir_durable(&dir.join("file/below")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_staging_files_are_removed_and_nothing_else() {
        let dir = temp("stale");
        let me = std::process::id();
        // Above any pid_max (4,194,304 at most): a writer that is not running.
        let dead = format!(".state.json.{}.3.tmp", 1u64 << 31);
        let mine = format!(".activity.json.{me}.0.tmp");
        // pid 1 always runs: its write may be under way.
        let live = ".state.json.1.7.tmp";
        let others = [
            "state.json",
            ".hidden.tmp",
            ".x.12.tmp",
            "..1.2.tmp",
            ".a.b.c.tmp",
        ];
        for n in [dead.as_str(), mine.as_str(), live].iter().chain(&others) {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        // Not a regular file: left alone.
        let odd = dir.join(format!(".d.{}.1.tmp", 1u64 << 31));
        std::fs::create_dir(&odd).unwrap();
        assert_eq!(remove_stale_staging(&dir), 2);
        let mut want: Vec<String> = others.iter().map(|s| s.to_string()).collect();
        want.extend([
            live.to_owned(),
            odd.file_name().unwrap().to_string_lossy().into(),
        ]);
        want.sort();
        assert_eq!(names(&dir), want);
        // What staging_path makes is recognised as staging, with this process's id.
        let made = staging_path(&dir.join("state.json"));
        assert_eq!(
            staging_pid(&made.file_name().unwrap().to_string_lossy()),
            Some(me)
        );
        assert_eq!(remove_stale_staging(&dir.join("missing")), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn staging_names_are_hidden_beside_the_file_and_never_reused() {
        let p = Path::new("/state/x");
        let (one, two) = (staging_path(p), staging_path(p));
        assert_ne!(one, two);
        assert_eq!(one.parent(), Some(Path::new("/state")));
        let name = one.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".x.") && name.ends_with(".tmp"), "{name}");
        assert_eq!(staging_path(Path::new("x")).parent(), Some(Path::new(".")));
    }
}
