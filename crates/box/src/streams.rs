//! Which terminals have a counters stream open (one each, at most half of `max_connections` in
//! all: contract §5), and until when: the stream bodies register and release themselves in it.
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

/// Why a stream cannot open now; each holds the seconds until that can change (`Retry-After`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// The terminal already has one: the time that one has left at most.
    Open(u64),
    /// Streams hold as many slots as they may: the time until the first of them ends.
    Full(u64),
}

/// Whole seconds until `at`, rounded up, at least 1.
fn secs_until(at: Instant) -> u64 {
    let left = at.saturating_duration_since(Instant::now());
    left.as_secs().saturating_add(1)
}

impl Streams {
    /// Registers a stream for `terminal` until `ends`, when the terminal has none and fewer than
    /// `most` are open (contract §5 rev. 3: streams hold at most half of `max_connections`).
    pub fn begin(
        self: &Arc<Self>,
        terminal: Terminal,
        ends: Instant,
        most: usize,
    ) -> Result<StreamGuard, Busy> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(other) = open.get(&terminal) {
            return Err(Busy::Open(secs_until(*other)));
        }
        if open.len() >= most {
            // None open (a box with one slot in all): as long as a stream may last.
            let first = open.values().min().copied().unwrap_or(ends);
            return Err(Busy::Full(secs_until(first)));
        }
        // Bounded by `most`, itself below `max_connections`.
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
