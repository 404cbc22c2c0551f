//! The control socket: one JSON object per line in, one per line out. A malformed or oversized
//! line gets an error reply and never disturbs the daemon.
use crate::server::App;
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

pub async fn serve(app: Arc<App>, listener: UnixListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let app = app.clone();
                tokio::spawn(async move {
                    client(app, stream).await;
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

async fn reply(stream: &mut UnixStream, v: serde_json::Value) -> bool {
    let mut line = v.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes()).await.is_ok()
}

async fn client(app: Arc<App>, mut stream: UnixStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let answer = super::execute(&app, &line[..line.len() - 1]);
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
