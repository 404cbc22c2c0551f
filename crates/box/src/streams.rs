//! Which terminals have a counters stream open (one each, contract §5), and until when: the
//! daemon's state holds it, the stream bodies register and release themselves in it.
use boxapi_core::fair::Terminal;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// The terminals with a stream open, and when each stream ends at the latest.
#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<Terminal, Instant>>,
}

/// One terminal's open stream; the terminal may open another once this is dropped.
pub struct StreamGuard {
    streams: Arc<Streams>,
    terminal: Terminal,
}

impl Streams {
    /// Registers a stream for `terminal` until `ends`; when it already has one, the seconds until
    /// that one ends at the latest (the `Retry-After` of the 429).
    pub fn begin(self: &Arc<Self>, terminal: Terminal, ends: Instant) -> Result<StreamGuard, u64> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(other) = open.get(&terminal) {
            let left = other.saturating_duration_since(Instant::now());
            return Err(left.as_secs().saturating_add(1));
        }
        // No bound needed here: each entry lives as long as a connection, and connections are
        // bounded by `max_connections`.
        open.insert(terminal, ends);
        Ok(StreamGuard {
            streams: self.clone(),
            terminal,
        })
    }

    /// How many streams are open now.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&self.terminal);
    }
}
