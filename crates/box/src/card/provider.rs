//! Operator-supplied partial cards: a file re-read when it changes, and a command run with a deadline.
//! A provider that fails, hangs or prints garbage has its layer skipped (and logged), never the card.
//! The per-station providers (`station_provider_file`, `station_provider_command`: a JSON map from
//! MAC address to `client.wifi` object) are the same machinery with another shape: a bad entry or
//! member is dropped and logged, the others kept.
use boxapi_core::log;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncReadExt;

/// Larger outputs are garbage by definition: a partial card is a few hundred bytes.
pub const MAX_LAYER_BYTES: usize = 64 * 1024;
/// A command's answer is reused this long, so that a page polling the card does not fork a process per request.
const COMMAND_CACHE: Duration = Duration::from_secs(2);

/// What a provider prints: a partial card, or the per-station map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Card,
    Stations,
}

impl Shape {
    fn file_source(self) -> &'static str {
        match self {
            Shape::Card => "provider_file",
            Shape::Stations => "station_provider_file",
        }
    }

    fn command_source(self) -> &'static str {
        match self {
            Shape::Card => "provider_command",
            Shape::Stations => "station_provider_command",
        }
    }

    fn parse(self, source: &str, bytes: &[u8]) -> Option<Value> {
        match self {
            Shape::Card => parse_layer(source, bytes),
            Shape::Stations => parse_stations(source, bytes),
        }
    }
}

fn parse_stations(source: &str, bytes: &[u8]) -> Option<Value> {
    match super::wifi::parse_stations(bytes) {
        Ok((map, problems)) => {
            if !problems.is_empty() {
                // Bounded: an operator needs the first few to fix the provider.
                let shown: Vec<&str> = problems.iter().take(8).map(String::as_str).collect();
                let more = problems.len().saturating_sub(shown.len());
                let mut text = shown.join("; ");
                if more > 0 {
                    text.push_str(&format!("; and {more} more"));
                }
                log::event("provider_error", &[("source", source), ("error", &text)]);
            }
            Some(Value::Object(map))
        }
        Err(e) => {
            log::event("provider_error", &[("source", source), ("error", &e)]);
            None
        }
    }
}

fn parse_layer(source: &str, bytes: &[u8]) -> Option<Value> {
    let v: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            log::event(
                "provider_error",
                &[("source", source), ("error", &format!("invalid JSON: {e}"))],
            );
            return None;
        }
    };
    let problems = super::layer::validate_layer(&v);
    if problems.is_empty() {
        Some(v)
    } else {
        log::event(
            "provider_error",
            &[("source", source), ("error", &problems.join("; "))],
        );
        None
    }
}

type FileStamp = (SystemTime, u64, Option<Arc<Value>>);

/// `provider_file`: parsed again only when its modification time or size changes.
pub struct FileLayer {
    path: PathBuf,
    shape: Shape,
    /// The file's modification time and length when read, and what it gave.
    cache: Mutex<Option<FileStamp>>,
    /// When the file was last looked at: at most one stat per second, however busy the API.
    checked: Mutex<Option<Instant>>,
}

/// How stale the file's layer may be.
const FILE_CHECK: Duration = Duration::from_secs(1);

impl FileLayer {
    pub fn new(path: PathBuf) -> Self {
        Self::with_shape(path, Shape::Card)
    }

    pub fn with_shape(path: PathBuf, shape: Shape) -> Self {
        FileLayer {
            path,
            shape,
            cache: Mutex::new(None),
            checked: Mutex::new(None),
        }
    }

    pub fn get(&self) -> Option<Arc<Value>> {
        {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked.is_some_and(|at| at.elapsed() < FILE_CHECK) {
                let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                return cache.as_ref().and_then(|(_, _, v)| v.clone());
            }
            *checked = Some(Instant::now());
        }
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(_) => {
                // Absent: nothing to add (a provider may write it later). What the removed file
                // said is forgotten, or the checks within the next second would still serve it.
                *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return None;
            }
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, len, v)) = cache.as_ref() {
            if (*t, *len) == stamp {
                return v.clone();
            }
        }
        let source = self.shape.file_source();
        // A regular file of at most 64 KiB (the cap holds should it grow after the look); a
        // named pipe or a device is never opened, its read would block or never end.
        let parsed = match boxapi_core::files::read_limited(&self.path, MAX_LAYER_BYTES as u64) {
            Ok(bytes) => self.shape.parse(source, &bytes).map(Arc::new),
            Err(e) => {
                log::event(
                    "provider_error",
                    &[("source", source), ("error", &e.to_string())],
                );
                None
            }
        };
        *cache = Some((stamp.0, stamp.1, parsed.clone()));
        parsed
    }
}

/// `provider_command`: run with a deadline, killed when it passes; its answer cached briefly.
pub struct CommandLayer {
    path: PathBuf,
    shape: Shape,
    timeout: Duration,
    cache: tokio::sync::Mutex<Option<(Instant, Option<Arc<Value>>)>>,
}

impl CommandLayer {
    pub fn new(path: PathBuf, timeout: Duration) -> Self {
        Self::with_shape(path, timeout, Shape::Card)
    }

    pub fn with_shape(path: PathBuf, timeout: Duration, shape: Shape) -> Self {
        CommandLayer {
            path,
            shape,
            timeout,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// At most one run at a time: concurrent requests wait for it (bounded by the timeout) and share it.
    pub async fn get(&self) -> Option<Arc<Value>> {
        let mut cache = self.cache.lock().await;
        if let Some((at, v)) = cache.as_ref() {
            if at.elapsed() < COMMAND_CACHE {
                return v.clone();
            }
        }
        let v = run(&self.path, self.timeout, self.shape)
            .await
            .map(Arc::new);
        *cache = Some((Instant::now(), v.clone()));
        v
    }
}

async fn run(path: &Path, timeout: Duration, shape: Shape) -> Option<Value> {
    let source = shape.command_source();
    let fail = |e: &str| {
        log::event("provider_error", &[("source", source), ("error", e)]);
        None
    };
    let mut child = match tokio::process::Command::new(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    let mut out = Vec::new();
    let Some(stdout) = child.stdout.take() else {
        return fail("no stdout");
    };
    let read = async {
        let n = stdout
            .take(MAX_LAYER_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .await;
        // Over the limit: its answer is refused whatever it does next, so it is not waited for
        // (a command that ignores SIGPIPE or lingers would otherwise hold the card's requests
        // until the timeout).
        if out.len() > MAX_LAYER_BYTES {
            let _ = child.start_kill();
        }
        (n, child.wait().await)
    };
    match tokio::time::timeout(timeout, read).await {
        Err(_) => fail("timed out; killed"),
        Ok((Err(e), _)) => fail(&format!("reading output: {e}")),
        Ok((_, _)) if out.len() > MAX_LAYER_BYTES => fail("output larger than 64 KiB"),
        Ok((_, Ok(status))) if !status.success() => fail(&format!("exited with {status}")),
        Ok((_, Err(e))) => fail(&format!("waiting: {e}")),
        Ok(_) => shape.parse(source, &out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_file_stops_counting_at_once_not_one_check_in_two() {
        let dir = std::env::temp_dir().join(format!("boxapi-provider-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("card.json");
        std::fs::write(&path, r#"{"box": {"model": "Old"}}"#).unwrap();
        let layer = FileLayer::new(path.clone());
        assert_eq!(layer.get().unwrap()["box"]["model"], "Old");
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(FILE_CHECK + Duration::from_millis(100));
        // The check that sees it gone, then the ones answered without a stat.
        for _ in 0..3 {
            assert_eq!(layer.get(), None);
        }
        // Written again (even with the same size): read again.
        std::fs::write(&path, r#"{"box": {"model": "New"}}"#).unwrap();
        std::thread::sleep(FILE_CHECK + Duration::from_millis(100));
        assert_eq!(layer.get().unwrap()["box"]["model"], "New");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pipe_or_a_device_is_skipped_without_blocking() {
        let dir = std::env::temp_dir().join(format!("boxapi-provider-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("card.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let got = [fifo, PathBuf::from("/dev/zero")].map(|p| FileLayer::new(p).get());
            let _ = tx.send(got);
        });
        let got = rx.recv_timeout(Duration::from_secs(5)).expect("blocked");
        assert_eq!(got, [None, None]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
