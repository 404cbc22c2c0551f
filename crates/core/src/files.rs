//! Files the daemons and their tools write (private keys, readable by their owner only, and
//! state replaced atomically) and the files a configuration names, read within a size limit.
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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

/// Replaces `path` atomically with `content` (created with `mode`): a temporary file in the same
/// directory, fsynced, renamed over the old one, then the directory fsynced, so that a power cut
/// leaves the old file or the new one, never half of either.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), FileError> {
    let err = |source| FileError {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(content).and_then(|_| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
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

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("boxapi-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert!(write_atomic(&dir.join("missing/x"), b"", 0o600).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
