//! One JSON object per line on stderr (journald, syslog and procd all take it): access log, errors,
//! reloads. Lines are handed to a writer thread through a bounded queue: a slow reader of stderr
//! (a busy journald, a full pipe) never stalls the runtime thread that serves every connection.
//! When the queue is full the line is dropped and counted; the count is logged once room returns.
use serde::Serialize;
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer thread; beyond this they are dropped (and counted).
const QUEUE: usize = 4096;
/// The writer gathers what is queued into one write of at most this many bytes.
const BATCH_BYTES: usize = 64 * 1024;
/// How long [`flush`] waits for the queue to drain (at exit).
const FLUSH_WAIT: Duration = Duration::from_secs(2);

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// Lines dropped because the queue was full, not yet reported.
static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// The queue to the writer thread; `None` if the thread could not be started (then lines are
/// written directly: better a slow log than none).
fn sink() -> Option<&'static Mutex<SyncSender<Msg>>> {
    static SINK: OnceLock<Option<Mutex<SyncSender<Msg>>>> = OnceLock::new();
    SINK.get_or_init(|| {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("boxapi-log".into())
            .stack_size(64 * 1024)
            .spawn(move || writer(rx))
            .ok()
            .map(|_| Mutex::new(tx))
    })
    .as_ref()
}

fn writer(rx: Receiver<Msg>) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    while let Ok(first) = rx.recv() {
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(l) => batch.extend_from_slice(&l),
                Msg::Flush(ack) => acks.push(ack),
            }
            if batch.len() < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        // A closed stderr must not take the daemon down.
        let _ = std::io::stderr().lock().write_all(&batch);
        batch.clear();
        for a in acks {
            let _ = a.send(());
        }
    }
}

fn write_line(line: Vec<u8>) {
    let Some(sink) = sink() else {
        let _ = std::io::stderr().lock().write_all(&line);
        return;
    };
    // Held only for a non-blocking try_send (a SyncSender is not Sync on older toolchains).
    let tx = sink.lock().unwrap_or_else(|p| p.into_inner());
    match tx.try_send(Msg::Line(line)) {
        Ok(()) => {
            let lost = DROPPED.swap(0, Ordering::Relaxed);
            if lost > 0 {
                let note = event_line("log_dropped", &[("lines", &lost.to_string())]);
                if tx.try_send(Msg::Line(note)).is_err() {
                    DROPPED.fetch_add(lost, Ordering::Relaxed);
                }
            }
        }
        Err(TrySendError::Full(_)) => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Disconnected(Msg::Line(l))) => {
            let _ = std::io::stderr().lock().write_all(&l);
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}

/// Waits (at most 2 s) until every queued line is written: call before the process exits.
pub fn flush() {
    let Some(sink) = sink() else { return };
    let (ack, done) = sync_channel(1);
    let sent = sink
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .try_send(Msg::Flush(ack));
    if sent.is_ok() {
        let _ = done.recv_timeout(FLUSH_WAIT);
    }
}

fn event_line(name: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut obj = Map::new();
    obj.insert("event".into(), name.into());
    for (k, v) in fields {
        obj.insert((*k).into(), (*v).into());
    }
    obj.insert(
        "time".into(),
        Value::String(crate::time::rfc3339_millis(SystemTime::now())),
    );
    let mut line = Value::Object(obj).to_string().into_bytes();
    line.push(b'\n');
    line
}

/// An event with string fields.
pub fn event(name: &str, fields: &[(&str, &str)]) {
    write_line(event_line(name, fields));
}

/// One access-log line, in the same shape as [`event`] lines (keys in the same, sorted order).
#[derive(Serialize)]
struct Access<'a> {
    duration_us: u64,
    event: &'static str,
    method: &'a str,
    path: &'a str,
    status: u16,
    time: String,
    tool: Option<&'a str>,
}

/// One access-log line. No token, no key, no client address. Serialised from a struct (it is on
/// every request's path: no map is built), escaped by serde_json.
pub fn access(tool: Option<&str>, method: &str, path: &str, status: u16, duration_us: u64) {
    let entry = Access {
        duration_us,
        event: "access",
        method,
        path,
        status,
        time: crate::time::rfc3339_millis(SystemTime::now()),
        tool,
    };
    let mut line = Vec::with_capacity(160);
    if serde_json::to_writer(&mut line, &entry).is_ok() {
        line.push(b'\n');
        write_line(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_are_json_with_escaped_strings() {
        let entry = Access {
            duration_us: 5,
            event: "access",
            method: "GET",
            path: "/a\"b\\c\n\u{1}é",
            status: 200,
            time: "t".into(),
            tool: None,
        };
        let v: Value = serde_json::from_slice(&serde_json::to_vec(&entry).unwrap()).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\n\u{1}é");
        assert_eq!(v["tool"], Value::Null);
        assert_eq!(v["event"], "access");
    }

    #[test]
    fn logging_never_blocks_and_flush_returns() {
        for i in 0..200 {
            access(Some("t"), "GET", "/x", 200, i);
        }
        flush();
    }
}
