//! Connection slots: who is waiting for their first request, oldest first, so that when every
//! slot is taken the slowest newcomer can be closed to make room (a slowloris cannot keep others out).
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A connection without a request for this long may be closed to make room when all slots are
/// taken: a TLS handshake on a LAN takes milliseconds, even on a box's CPU with many at once.
pub const MIN_PENDING_AGE: Duration = Duration::from_millis(100);

/// Connections that have not sent their first request yet, oldest first. When every connection
/// slot is taken, the oldest of these is closed to make room: slow or silent clients (a
/// slowloris) cannot keep others out for the whole handshake deadline.
#[derive(Default)]
pub struct Pending {
    /// The next id (a plain u64 under the lock: 32-bit MIPS has no 64-bit atomics) and the queue.
    queue: std::sync::Mutex<(u64, std::collections::VecDeque<PendingEntry>)>,
}

/// (id, since when, how to tell it to close)
type PendingEntry = (u64, Instant, Arc<tokio::sync::Notify>);

/// One connection's place in [`Pending`]; leaves the queue when released or dropped.
pub struct PendingSlot {
    id: u64,
    evicted: Arc<tokio::sync::Notify>,
    set: Arc<Pending>,
}

impl Pending {
    pub(crate) fn register(self: &Arc<Self>) -> PendingSlot {
        let evicted = Arc::new(tokio::sync::Notify::new());
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let id = q.0;
        q.0 = q.0.wrapping_add(1);
        q.1.push_back((id, Instant::now(), evicted.clone()));
        drop(q);
        PendingSlot {
            id,
            evicted,
            set: self.clone(),
        }
    }

    /// Closes the oldest connection still waiting for its first request, if it has waited at
    /// least `MIN_PENDING_AGE` (a normal handshake is over long before); false if there is none.
    pub(crate) fn evict_oldest(&self) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.1
            .front()
            .is_none_or(|(_, since, _)| since.elapsed() < MIN_PENDING_AGE)
        {
            return false;
        }
        match q.1.pop_front() {
            Some((_, _, n)) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }
}

impl PendingSlot {
    /// The first request arrived: this connection can no longer be evicted.
    pub fn release(&self) {
        let mut q = self.set.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.1.retain(|(id, _, _)| *id != self.id);
    }

    pub async fn evicted(&self) {
        self.evicted.notified().await
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.release();
    }
}
