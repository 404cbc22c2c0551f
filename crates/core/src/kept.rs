//! A small file of a daemon's own kept twice: its previous good version (`NAME.prev`) is written
//! whole before the file is replaced, so that a damaged file can fail closed on what the other held.
use crate::files::{self, FileError};
use std::path::{Path, PathBuf};

/// One copy, as read.
#[derive(Debug, PartialEq)]
pub enum Copy<T> {
    Missing,
    Good(T),
    /// Unreadable, too large, not a regular file, or refused by the caller's parser: why.
    Damaged(String),
}

/// A file and its previous good version beside it.
pub struct Kept {
    pub file: PathBuf,
    pub prev: PathBuf,
    /// The largest size either may have: anything larger is not ours.
    limit: u64,
}

impl Kept {
    /// `dir/name` and `dir/name.prev`.
    pub fn new(dir: &Path, name: &str, limit: u64) -> Kept {
        Kept {
            file: dir.join(name),
            prev: dir.join(format!("{name}.prev")),
            limit,
        }
    }

    /// Both copies, the file's first, each parsed by `parse`. Only reads.
    pub fn read<T>(&self, parse: impl Fn(&[u8]) -> Result<T, String>) -> (Copy<T>, Copy<T>) {
        let one = |path: &Path| {
            // A regular file only: whatever else sits there (a pipe, a device) is refused
            // unopened.
            match files::read_limited(path, self.limit) {
                Err(e) if e.is_not_found() => Copy::Missing,
                Err(e) => Copy::Damaged(e.to_string()),
                Ok(b) => parse(&b).map_or_else(Copy::Damaged, Copy::Good),
            }
        };
        (one(&self.file), one(&self.prev))
    }

    /// The good copy `rank` puts highest, and why each damaged copy could not be read: both are
    /// written with every version, the previous first, so either good copy is one accepted and a
    /// damaged copy never lowers what the other holds.
    pub fn newest<T>(
        &self,
        parse: impl Fn(&[u8]) -> Result<T, String>,
        rank: impl Fn(&T) -> u64,
    ) -> (Option<T>, Option<String>) {
        let (file, prev) = self.read(parse);
        let mut best: Option<T> = None;
        let mut damage = Vec::new();
        for (path, copy) in [(&self.file, file), (&self.prev, prev)] {
            match copy {
                Copy::Good(v) if best.as_ref().is_none_or(|b| rank(&v) > rank(b)) => best = Some(v),
                Copy::Damaged(why) => damage.push(format!("{}: {why}", path.display())),
                _ => {}
            }
        }
        (best, (!damage.is_empty()).then(|| damage.join("; ")))
    }

    /// Replaces both atomically, the previous version first: a power cut between the two writes
    /// leaves two good copies, one of them the content in flight.
    pub fn save(&self, content: &[u8], mode: u32) -> Result<(), FileError> {
        clear_way(&self.prev);
        files::write_atomic(&self.prev, content, mode)?;
        self.save_file_only(content, mode)
    }

    /// Replaces the file only, leaving the previous version as it is.
    pub fn save_file_only(&self, content: &[u8], mode: u32) -> Result<(), FileError> {
        clear_way(&self.file);
        files::write_atomic(&self.file, content, mode)
    }

    /// Gives a damaged file a second name (`NAME.broken-<time>`) so that it is kept for a look;
    /// the first name stays until a good version replaces it, so a failure to write that one
    /// leaves the damage to be found again at the next start. `None`: nothing there to keep.
    pub fn keep_aside(&self) -> Option<PathBuf> {
        aside(&self.file)
    }
}

/// A rename cannot replace a directory: one standing where a copy belongs (damage, or a hand's
/// mistake) would fail every save, and with it every `ctl` change, `ctl enable` included. It is
/// kept aside (logged); should that fail, the save fails and says why.
fn clear_way(path: &Path) {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return;
    }
    if let Some(kept) = aside(path) {
        crate::log::event(
            "kept_aside",
            &[
                ("file", &path.display().to_string()),
                ("kept", &kept.display().to_string()),
                ("why", "a directory where a file of ours belongs"),
            ],
        );
    }
}

/// `path` under a second name (`NAME.broken-<time>`) beside it: linked when it is a file (the
/// first name stays), renamed otherwise (a directory cannot be linked).
fn aside(path: &Path) -> Option<PathBuf> {
    if std::fs::symlink_metadata(path).is_err() {
        return None;
    }
    let mut name = path.file_name()?.to_os_string();
    name.push(format!(".broken-{}", crate::time::unix_now()));
    let kept = files::parent(path).join(name);
    let ok = std::fs::hard_link(path, &kept).is_ok() || std::fs::rename(path, &kept).is_ok();
    ok.then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(b: &[u8]) -> Result<u64, String> {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| "not a number".to_owned())
    }

    /// An empty directory of this test's own.
    fn fresh(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("boxapi-kept-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn both_copies_are_read_and_told_apart() {
        let dir = fresh("copies");
        let k = Kept::new(&dir, "n", 16);
        assert_eq!(k.read(number), (Copy::Missing, Copy::Missing));
        k.save(b"7\n", 0o600).unwrap();
        assert_eq!(k.read(number), (Copy::Good(7), Copy::Good(7)));
        k.save_file_only(b"8\n", 0o600).unwrap();
        assert_eq!(k.read(number), (Copy::Good(8), Copy::Good(7)));
        std::fs::write(&k.file, b"x").unwrap();
        assert_eq!(
            k.read(number),
            (Copy::Damaged("not a number".into()), Copy::Good(7))
        );
        std::fs::write(&k.prev, [b'1'; 17]).unwrap();
        assert!(matches!(k.read(number).1, Copy::Damaged(w) if w.starts_with("larger than")));
        let kept = k.keep_aside().unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"x");
        assert!(kept
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("n.broken-"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A directory where a copy belongs (damage, or a hand's mistake) would fail every save, and
    /// with it every `ctl` change, `ctl enable` included: it is kept aside and the save goes on.
    #[test]
    fn a_directory_in_a_copys_place_is_kept_aside_and_the_save_goes_on() {
        let dir = fresh("dir");
        let k = Kept::new(&dir, "n", 16);
        std::fs::create_dir_all(k.prev.join("inside")).unwrap();
        k.save(b"7\n", 0o600)
            .expect("saved over a directory at NAME.prev");
        assert_eq!(k.read(number), (Copy::Good(7), Copy::Good(7)));
        std::fs::remove_file(&k.file).unwrap();
        std::fs::create_dir(&k.file).unwrap();
        k.save_file_only(b"8\n", 0o600)
            .expect("saved over a directory at NAME");
        assert_eq!(k.read(number), (Copy::Good(8), Copy::Good(7)));
        let aside: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".broken-"))
            .collect();
        assert_eq!(aside.len(), 2, "{aside:?}");
        assert!(aside.iter().any(|n| n.starts_with("n.prev.broken-")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
