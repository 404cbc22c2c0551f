//! One JSON object per line on stderr (journald, syslog and procd all take it): access log, errors,
//! reloads. Lines are appended to a bounded buffer that a writer thread empties: a slow reader of
//! stderr (a busy journald, a full pipe) never stalls the runtime thread that serves every
//! connection, and a busy API costs one wake-up and one write per batch, not a thread hand-off
//! per line. When the buffer is full the line is dropped and counted; the count is logged once
//! room returns.
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

/// Bytes waiting for the writer thread; beyond this lines are dropped (and counted).
const MAX_PENDING: usize = 256 * 1024;
/// After the first line of a batch, how long the writer lets more gather before writing them in
/// one go (so a line reaches stderr within about this long). At 40,000 requests a second that is
/// 80 lines a write; an idle box's line is delayed by no more than this.
const BATCH_WINDOW: Duration = Duration::from_millis(2);
/// How long [`flush`] waits for the buffer to drain (at exit).
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Lines dropped because the buffer was full, not yet reported.
static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct Pending {
    lines: Vec<u8>,
    /// The writer is waiting for a first line (and must be woken for it).
    writer_idle: bool,
    /// Flushes asked for, and the last one whose lines are written.
    flush_asked: u64,
    flush_done: u64,
}

struct Sink {
    pending: Mutex<Pending>,
    /// The writer waits here for a first line or a flush.
    wake: Condvar,
    /// [`flush`] waits here for the writer.
    written: Condvar,
}

impl Sink {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

static SINK: Sink = Sink {
    pending: Mutex::new(Pending {
        lines: Vec::new(),
        writer_idle: true,
        flush_asked: 0,
        flush_done: 0,
    }),
    wake: Condvar::new(),
    written: Condvar::new(),
};

/// The buffer, once its writer thread runs; `None` if the thread could not be started (then lines
/// are written directly: better a slow log than none).
fn sink() -> Option<&'static Sink> {
    static STARTED: OnceLock<bool> = OnceLock::new();
    let started = STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("boxapi-log".into())
            .stack_size(64 * 1024)
            .spawn(|| writer(&SINK))
            .is_ok()
    });
    started.then_some(&SINK)
}

fn writer(sink: &Sink) {
    let mut out = Vec::new();
    loop {
        let flushing = {
            let mut p = sink.lock();
            while p.lines.is_empty() && p.flush_asked == p.flush_done {
                p.writer_idle = true;
                p = sink.wake.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            p.writer_idle = false;
            p.flush_asked != p.flush_done
        };
        if !flushing {
            std::thread::sleep(BATCH_WINDOW);
        }
        let asked = {
            let mut p = sink.lock();
            std::mem::swap(&mut p.lines, &mut out);
            p.flush_asked
        };
        // A closed stderr must not take the daemon down.
        let _ = std::io::stderr().lock().write_all(&out);
        out.clear();
        sink.lock().flush_done = asked;
        sink.written.notify_all();
    }
}

fn write_line(line: Vec<u8>) {
    let Some(sink) = sink() else {
        let _ = std::io::stderr().lock().write_all(&line);
        return;
    };
    let mut p = sink.lock();
    if p.lines.len() + line.len() > MAX_PENDING {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let lost = DROPPED.swap(0, Ordering::Relaxed);
    if lost > 0 {
        p.lines
            .extend_from_slice(&event_line("log_dropped", &[("lines", &lost.to_string())]));
    }
    p.lines.extend_from_slice(&line);
    if p.writer_idle {
        p.writer_idle = false;
        drop(p);
        sink.wake.notify_one();
    }
}

/// Waits (at most 2 s) until every line logged so far is written: call before the process exits.
pub fn flush() {
    let Some(sink) = sink() else { return };
    let mut p = sink.lock();
    p.flush_asked += 1;
    let want = p.flush_asked;
    if p.writer_idle {
        p.writer_idle = false;
        sink.wake.notify_one();
    }
    let _ = sink
        .written
        .wait_timeout_while(p, FLUSH_WAIT, |p| p.flush_done < want);
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

/// One access-log line. No token, no key, no client address. In the same shape as [`event`]
/// lines (keys sorted); written with literal names (it is on every request's path), its strings
/// escaped by serde_json (`crate::json`).
pub fn access(tool: Option<&str>, method: &str, path: &str, status: u16, duration_us: u64) {
    write_line(access_line(
        tool,
        method,
        path,
        status,
        duration_us,
        SystemTime::now(),
    ));
}

fn access_line(
    tool: Option<&str>,
    method: &str,
    path: &str,
    status: u16,
    duration_us: u64,
    time: SystemTime,
) -> Vec<u8> {
    use crate::json::{push_opt_str, push_str, push_u64};
    let mut line = Vec::with_capacity(160);
    line.extend_from_slice(b"{\"duration_us\":");
    push_u64(&mut line, duration_us);
    line.extend_from_slice(b",\"event\":\"access\",\"method\":");
    push_str(&mut line, method);
    line.extend_from_slice(b",\"path\":");
    push_str(&mut line, path);
    line.extend_from_slice(b",\"status\":");
    push_u64(&mut line, status.into());
    line.extend_from_slice(b",\"time\":\"");
    crate::time::push_rfc3339_millis(&mut line, time);
    line.push(b'"');
    line.extend_from_slice(b",\"tool\":");
    push_opt_str(&mut line, tool);
    line.extend_from_slice(b"}\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn access_lines_are_json_with_escaped_strings_in_the_shape_of_event_lines() {
        let line = access_line(None, "GET", "/a\"b\\c\n\u{1}é", 200, 5, SystemTime::now());
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\n\u{1}é");
        assert_eq!(v["tool"], Value::Null);
        assert_eq!(v["event"], "access");
        assert_eq!(v["duration_us"], 5);
        assert_eq!(v["status"], 200);
        // Byte for byte what serde_json writes for the same members (sorted, compact).
        let line = access_line(
            Some("speed\"test"),
            "POST",
            "/v1/token",
            429,
            17,
            std::time::UNIX_EPOCH + Duration::from_millis(1_764_806_400_007),
        );
        let same = json!({"duration_us": 17, "event": "access", "method": "POST", "path": "/v1/token",
            "status": 429, "time": "2025-12-04T00:00:00.007Z", "tool": "speed\"test"});
        assert_eq!(line, format!("{same}\n").into_bytes());
    }

    #[test]
    fn logging_never_blocks_and_flush_returns() {
        for i in 0..200 {
            access(Some("t"), "GET", "/x", 200, i);
        }
        flush();
    }
}
