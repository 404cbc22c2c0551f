//! The snapshot in force: one immutable, fully built configuration behind an `Arc`, swapped
//! whole on reload, so that a request keeps the one it started with.
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use tokio::sync::watch;

pub struct Current<S> {
    now: RwLock<Arc<S>>,
    /// Bumped at every swap: tasks that follow the configuration wait on it rather than poll.
    swapped: watch::Sender<()>,
}

impl<S> Current<S> {
    pub fn new(first: S) -> Self {
        Current {
            now: RwLock::new(Arc::new(first)),
            swapped: watch::Sender::new(()),
        }
    }

    /// The snapshot in force now.
    pub fn get(&self) -> Arc<S> {
        self.now.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Swaps in a new snapshot and tells the watchers.
    pub fn replace(&self, new: S) {
        *self.now.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        // After the swap: a watcher woken by it always reads the new snapshot.
        self.swapped.send_replace(());
    }

    /// Resolves at each later swap (mark the receiver seen before reading the snapshot, so a
    /// swap between the two is not missed).
    pub fn watch(&self) -> watch::Receiver<()> {
        self.swapped.subscribe()
    }
}

/// Files whose replacement on disk calls for a reload (the certificate and its key), with their
/// modification times when the snapshot was built.
#[derive(Debug, Default)]
pub struct Files(Vec<(PathBuf, Option<SystemTime>)>);

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Files {
    pub fn of(paths: &[&Path]) -> Files {
        Files(paths.iter().map(|p| (p.to_path_buf(), mtime(p))).collect())
    }

    /// Whether any of them was replaced (or changed, or removed) since.
    pub fn changed(&self) -> bool {
        self.0.iter().any(|(p, t)| mtime(p) != *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_swap_wakes_the_watchers_and_earlier_holders_keep_theirs() {
        let current = Current::new(1);
        let mut watch = current.watch();
        let held = current.get();
        current.replace(2);
        assert!(watch.has_changed().unwrap());
        watch.borrow_and_update();
        assert_eq!((*held, *current.get()), (1, 2));
    }

    #[test]
    fn a_rewritten_file_is_noticed() {
        let dir = std::env::temp_dir().join(format!("boxapi-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("cert.pem");
        std::fs::write(&f, "a").unwrap();
        let files = Files::of(&[&f]);
        assert!(!files.changed());
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(files.changed());
        std::fs::remove_file(&f).unwrap();
        assert!(files.changed());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
