//! The control socket: one JSON object per line in, one per line out. A malformed or oversized
//! line gets an error reply and never disturbs the daemon.
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// A command line is tens of bytes; this bounds what a client can make the daemon buffer.
pub const MAX_LINE: usize = 4096;
/// A client must send a complete line within this time of connecting (or of its last answer):
/// `boxapi ctl` sends its line at once, so only a stalled client ever waits this long.
pub const LINE_DEADLINE: Duration = Duration::from_secs(5);
/// Control clients are local tools; a handful at once is plenty. When all are taken, the client
/// that has waited longest without sending a command is closed to make room: an idle client
/// never keeps `boxapi ctl` out.
const MAX_CLIENTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("control_socket {0}: {1}")]
    Io(String, std::io::Error),
    #[error("control_socket {0}: another daemon is running (it answers on this socket)")]
    AlreadyRunning(String),
}

/// Binds the control socket with mode 0600, refusing to steal it from a daemon that answers on it.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let name = path.display().to_string();
    let err = |e| BindError::Io(name.clone(), e);
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(BindError::AlreadyRunning(name));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    // The socket is created with mode 0600 from the start: no window where others could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    bound.map_err(err)
}

/// What a daemon answers to one command line. It may block (fsync, reading files): it runs on a
/// blocking thread, never on the runtime that serves connections, one command at a time.
pub type Handler = Arc<dyn Fn(&[u8]) -> Value + Send + Sync>;

/// Connected clients and which of them are idle (waiting for a line), oldest first.
#[derive(Default)]
struct Clients {
    next: u64,
    count: usize,
    idle: std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>,
}

impl Clients {
    fn set_idle(&mut self, id: u64, kick: &Arc<tokio::sync::Notify>, idle: bool) {
        self.idle.retain(|(i, _)| *i != id);
        if idle {
            self.idle.push_back((id, kick.clone()));
        }
    }
}

type Shared = Arc<std::sync::Mutex<Clients>>;

fn lock(c: &Shared) -> std::sync::MutexGuard<'_, Clients> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves the control socket: each line goes to `handler`, each answer goes back as one line.
pub async fn serve(listener: UnixListener, handler: Handler) {
    let clients: Shared = Arc::default();
    // One command at a time: state changes are read-modify-write.
    let serial = Arc::new(std::sync::Mutex::new(()));
    let room = Arc::new(tokio::sync::Notify::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                crate::log::event("control_error", &[("error", &e.to_string())]);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // At capacity: close the longest-idle client; if every client is in a command, wait for
        // one to finish (commands are short).
        loop {
            let evicted = {
                let mut c = lock(&clients);
                if c.count < MAX_CLIENTS {
                    None
                } else {
                    Some(c.idle.pop_front())
                }
            };
            match evicted {
                None => break,
                Some(Some((_, kick))) => kick.notify_one(),
                Some(None) => {}
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), room.notified()).await;
        }
        let id = {
            let mut c = lock(&clients);
            c.count += 1;
            c.next += 1;
            c.next
        };
        let (handler, clients, serial, room) = (
            handler.clone(),
            clients.clone(),
            serial.clone(),
            room.clone(),
        );
        tokio::spawn(async move {
            let kick = Arc::new(tokio::sync::Notify::new());
            client(handler, stream, id, &kick, &clients, serial).await;
            let mut c = lock(&clients);
            c.count -= 1;
            c.set_idle(id, &kick, false);
            drop(c);
            room.notify_one();
        });
    }
}

async fn reply(stream: &mut UnixStream, v: Value) -> bool {
    let mut line = v.to_string();
    line.push('\n');
    matches!(
        tokio::time::timeout(LINE_DEADLINE, stream.write_all(line.as_bytes())).await,
        Ok(Ok(()))
    )
}

async fn client(
    handler: Handler,
    mut stream: UnixStream,
    id: u64,
    kick: &Arc<tokio::sync::Notify>,
    clients: &Shared,
    serial: Arc<std::sync::Mutex<()>>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = buf.drain(..=end).collect();
            line.pop();
            lock(clients).set_idle(id, kick, false);
            let (h, serial) = (handler.clone(), serial.clone());
            let answer = tokio::task::spawn_blocking(move || {
                let _one_at_a_time = serial.lock().unwrap_or_else(|p| p.into_inner());
                h(&line)
            })
            .await
            .unwrap_or_else(|_| super::error_reply("the command failed inside the daemon"));
            if !reply(&mut stream, answer).await {
                return;
            }
        }
        if buf.len() > MAX_LINE {
            let _ = reply(
                &mut stream,
                super::error_reply("line longer than 4096 bytes"),
            )
            .await;
            return;
        }
        lock(clients).set_idle(id, kick, true);
        tokio::select! {
            r = tokio::time::timeout(LINE_DEADLINE, stream.read(&mut chunk)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            },
            _ = kick.notified() => return,
        }
    }
}
