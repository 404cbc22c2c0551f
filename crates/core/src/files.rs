//! Files the daemons and their tools write: private keys, readable by their owner only.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
