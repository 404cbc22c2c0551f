//! Each connection's life in both daemons: accept, each phase's deadline after the handshake, and
//! the drain at shutdown, which tells every connection to close after its answer in flight.
use crate::control::{Control, Mode};
use crate::fair::{Phase, Slot, Slots, EVICTED_LINGER};
use crate::log;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A kept-alive connection must start its next request (its whole head read) within this time
/// of the last answer: a page polling the counters does; an idle connection just holds a slot.
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(5);
/// How often a connection's deadlines are looked at (phases change without a wake-up: a
/// deadline is kept to within this).
const PHASE_CHECK: Duration = Duration::from_secs(1);
/// On shutdown, connections get this long to finish the answers in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// After an accept error (typically EMFILE), the loop waits this long rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections for ever and hands each to `accepted` (which spawns its task). Never
/// waits for room: the accept queue is drained at once, so a flood from one terminal cannot keep
/// another's connection waiting in the kernel's backlog; admission happens in each task.
pub async fn accept(listener: TcpListener, mut accepted: impl FnMut(TcpStream, SocketAddr)) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => accepted(stream, peer),
            Err(e) => {
                log::event("accept_error", &[("error", &e.to_string())]);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves one connection (`conn`, hyper's, after the handshake) until it ends, the slot's phases
/// telling where it is: before its first request it has until `first_head`, for each next head
/// [`KEEP_ALIVE_IDLE`] from the last answer (phases `Idle` and `Head`), and a request under way
/// until `busy_until(phase, since)` (phases `Body`, `Busy` and `Streaming`); a deadline that
/// passes with the phase unchanged closes it. So does the subscriber's switch-off
/// (`Mode::Disabled`). Closed to make room while its request was still arriving
/// ([`Slot::abrupt`]), it is dropped at once; else it finishes the answer it may be writing within
/// [`EVICTED_LINGER`]. When the daemon stops it finishes its request in flight under the same
/// deadlines, and reads no further one (`graceful`: hyper's graceful shutdown).
pub async fn serve<C: Future>(
    mut conn: Pin<&mut C>,
    slot: &Slot,
    control: &Control,
    first_head: Instant,
    busy_until: impl Fn(Phase, Instant) -> Instant,
    graceful: impl Fn(Pin<&mut C>),
) {
    let mut state = control.subscribe();
    let mut stopping = false;
    // No phase: closed to make room.
    while let Some((phase, since)) = slot.phase() {
        let until = match phase {
            Phase::Body | Phase::Busy | Phase::Streaming => busy_until(phase, since),
            _ if !slot.served() => first_head,
            _ => since + KEEP_ALIVE_IDLE,
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            // Looked at least every second: phases change without waking this loop.
            _ = tokio::time::sleep_until(until.min(Instant::now() + PHASE_CHECK)) => {
                if slot.phase() == Some((phase, since)) && Instant::now() >= until {
                    return; // no (further) request in time, or a request that never ends
                }
            }
            _ = slot.evicted(), if !stopping => {
                if slot.closing() {
                    // Idle: hyper closes at once; else after the answer in flight.
                    graceful(conn.as_mut());
                    stopping = true;
                }
            }
            changed = state.changed() => {
                // The subscriber's switch-off also ends connections already open.
                if changed.is_err() || state.borrow().mode == Mode::Disabled {
                    return;
                }
            }
        }
    }
    // Closed to make room for another terminal. With no answer of it under way (a request still
    // arriving), dropped at once; else perhaps while its answer was being written: that answer
    // is finished (briefly), no further request is read.
    if slot.abrupt() {
        return;
    }
    graceful(conn.as_mut());
    let _ = tokio::time::timeout(EVICTED_LINGER, conn).await;
}

/// The daemon is stopping (its listeners are closed): tells every connection to close after its
/// answer in flight, and waits for them at most [`SHUTDOWN_GRACE`].
pub async fn drain(slots: &Slots) {
    slots.shutdown();
    let drained = slots.drained(SHUTDOWN_GRACE).await;
    let how = if drained {
        "yes"
    } else {
        "no, grace period over"
    };
    log::event("stopped", &[("drained", how)]);
}
