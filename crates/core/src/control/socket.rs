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
/// An idle control connection is closed after this long.
const IDLE: Duration = Duration::from_secs(30);
/// Control clients are local tools; a handful at once is plenty.
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

/// What a daemon answers to one command line.
pub type Handler = Arc<dyn Fn(&[u8]) -> Value + Send + Sync>;

/// Serves the control socket: each line goes to `handler`, each answer goes back as one line.
pub async fn serve(listener: UnixListener, handler: Handler) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let handler = handler.clone();
                tokio::spawn(async move {
                    client(handler, stream).await;
                    drop(permit);
                });
            }
            Err(e) => {
                crate::log::event("control_error", &[("error", &e.to_string())]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn reply(stream: &mut UnixStream, v: Value) -> bool {
    let mut line = v.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes()).await.is_ok()
}

async fn client(handler: Handler, mut stream: UnixStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let answer = handler(&line[..line.len() - 1]);
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
        match tokio::time::timeout(IDLE, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
