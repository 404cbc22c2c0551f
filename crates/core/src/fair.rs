//! Fair shares: who a connection belongs to (its terminal), and the connection slots, counted
//! per terminal so that one host cannot take what the others need. At capacity, unfinished
//! handshakes and idle keep-alive connections are closed first (oldest first); a connection in
//! the middle of a request is never cut to make room. When none is old enough, the terminal
//! holding the most slots gives one up to a terminal holding fewer: several hosts polling
//! together cannot keep a further one out.
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A TLS handshake on a LAN takes milliseconds, even on a box's CPU with many at once: one not
/// finished after this long may be closed to make room.
pub const MIN_HANDSHAKE_AGE: Duration = Duration::from_millis(100);
/// A keep-alive connection idle this long may be closed to make room (a page polling the
/// counters every few hundred milliseconds keeps its connection).
pub const MIN_IDLE_AGE: Duration = Duration::from_millis(500);
/// A connection closed to make room while an answer was still being written gets this long to
/// finish it (servers shut such a connection down gracefully: no further request is read).
pub const EVICTED_LINGER: Duration = Duration::from_secs(1);
/// How long a newcomer finding no room waits for some before it is closed.
pub const PARK: Duration = Duration::from_secs(1);
/// A waiting newcomer looks again this often (connections age into evictability).
const RETRY: Duration = Duration::from_millis(100);

/// One client device, as well as the network lets us tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Terminal {
    /// An IPv4 address whose MAC is unknown (an IPv4-mapped IPv6 address counts as its IPv4
    /// address).
    V4([u8; 4]),
    /// On the LAN: the link-layer address behind any address of the terminal (every LAN device
    /// shares one /64 and rotates privacy addresses, or holds several IPv4 ones, but keeps its
    /// MAC).
    Mac([u8; 6]),
    /// An IPv6 address whose MAC is unknown (loopback, not yet in the neighbour table), or on the
    /// internet-facing authority an IPv6 /64 (the address bits below it zeroed).
    V6(u128),
}

impl Terminal {
    /// The terminal of a peer address, before any neighbour lookup.
    pub fn of_ip(ip: IpAddr) -> Terminal {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Terminal::V4(v4.octets()),
            IpAddr::V6(v6) => Terminal::V6(u128::from(v6)),
        }
    }

    /// The terminal of an internet peer: IPv4 address, or IPv6 /64 (one subscriber's whole prefix).
    pub fn of_internet_ip(ip: IpAddr) -> Terminal {
        match Terminal::of_ip(ip) {
            Terminal::V6(bits) => Terminal::V6(bits & !((1u128 << 64) - 1)),
            t => t,
        }
    }
}

/// Where a connection is in its life; what may be closed to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, TLS handshake not finished.
    Handshake,
    /// Waiting for a request head (the first one, or the next on a kept-alive connection).
    Idle,
    /// A request is being answered.
    Busy,
    /// Its answer is a stream (`/v1/counters/stream`), writing for up to its time limit: like
    /// `Busy`, never closed to make room, with a deadline of its own.
    Streaming,
}

struct Entry {
    terminal: Terminal,
    phase: Phase,
    /// When the current phase began.
    since: Instant,
    /// Told when this connection must close.
    kick: Arc<Notify>,
}

struct Table {
    limit: usize,
    share: usize,
    next: u64,
    /// Open connections by admission order.
    conns: BTreeMap<u64, Entry>,
    per_terminal: HashMap<Terminal, usize>,
}

impl Table {
    fn count(&self, t: &Terminal) -> usize {
        self.per_terminal.get(t).copied().unwrap_or(0)
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if let Some(n) = self.per_terminal.get_mut(&e.terminal) {
            *n -= 1;
            if *n == 0 {
                self.per_terminal.remove(&e.terminal);
            }
        }
        Some(e)
    }

    /// Closes the best victim (of `only` this terminal, or of anyone): the oldest unfinished
    /// handshake, else the longest-idle keep-alive connection; never a busy one, never `spare`,
    /// and with `Ages::MIN`, never one that is too young. True if one was closed.
    fn evict(
        &mut self,
        now: Instant,
        only: Option<Terminal>,
        spare: Option<u64>,
        ages: Ages,
    ) -> bool {
        self.evict_of(now, |t| only.is_none_or(|o| *t == o), spare, ages)
    }

    /// [`Table::evict`] among the connections of the terminals `of` accepts.
    fn evict_of(
        &mut self,
        now: Instant,
        of: impl Fn(&Terminal) -> bool,
        spare: Option<u64>,
        ages: Ages,
    ) -> bool {
        let candidates = || {
            self.conns
                .iter()
                .filter(|(id, e)| of(&e.terminal) && Some(**id) != spare)
        };
        let handshake = candidates()
            .filter(|(_, e)| {
                e.phase == Phase::Handshake && now.duration_since(e.since) >= ages.handshake
            })
            .min_by_key(|(_, e)| e.since)
            .map(|(id, _)| *id);
        let victim = handshake.or_else(|| {
            candidates()
                .filter(|(_, e)| e.phase == Phase::Idle && now.duration_since(e.since) >= ages.idle)
                .min_by_key(|(_, e)| e.since)
                .map(|(id, _)| *id)
        });
        match victim.and_then(|id| self.remove(id)) {
            Some(e) => {
                e.kick.notify_one();
                true
            }
            None => false,
        }
    }
}

impl Table {
    /// Makes room for `newcomer` at capacity when no connection is old enough to go (closed
    /// gracefully: an answer being written is finished). The terminals holding at least two
    /// slots more than it give one up, the biggest holders first, whichever of them has the
    /// longest-idle connection (or a handshake) on a tie; the "two more" keeps two terminals
    /// from taking one slot back and forth. A terminal holding nothing is served even when every
    /// slot is held by terminals holding one (as many addresses as slots): anyone's longest-idle
    /// connection goes. Without this, four hosts each polling within its quarter would hold every
    /// slot forever.
    fn evict_from_bigger(&mut self, now: Instant, newcomer: Terminal) -> bool {
        let have = self.count(&newcomer);
        let holders_of = |table: &Table, level: usize| -> Vec<Terminal> {
            table
                .per_terminal
                .iter()
                .filter(|(t, n)| **t != newcomer && **n == level)
                .map(|(t, _)| *t)
                .collect()
        };
        let mut counts: Vec<usize> = self
            .per_terminal
            .iter()
            .filter(|(t, n)| **t != newcomer && **n > have + 1)
            .map(|(_, n)| *n)
            .collect();
        counts.sort_unstable_by_key(|n| std::cmp::Reverse(*n));
        counts.dedup();
        for level in counts {
            let holders = holders_of(self, level);
            if self.evict_of(now, |t| holders.contains(t), None, Ages::ANY) {
                return true;
            }
        }
        have == 0 && self.evict_of(now, |t| *t != newcomer, None, Ages::IDLE_ANY)
    }

    /// Closes what a terminal holds beyond its share (handshakes and idle connections, of any
    /// age; busy ones are left to finish).
    fn shed_over_share(&mut self, now: Instant) {
        let over: Vec<Terminal> = self
            .per_terminal
            .iter()
            .filter(|(_, n)| **n > self.share)
            .map(|(t, _)| *t)
            .collect();
        for t in over {
            while self.count(&t) > self.share && self.evict(now, Some(t), None, Ages::ANY) {}
        }
    }
}

/// How old a connection in each phase must be to be closed to make room.
#[derive(Clone, Copy)]
struct Ages {
    handshake: Duration,
    idle: Duration,
}

impl Ages {
    /// For a terminal's own connections and at capacity: none that may still be in use.
    const MIN: Ages = Ages {
        handshake: MIN_HANDSHAKE_AGE,
        idle: MIN_IDLE_AGE,
    };
    /// Taken from a terminal holding more than its fair part (closed gracefully: an answer
    /// being written is finished).
    const ANY: Ages = Ages {
        handshake: Duration::ZERO,
        idle: Duration::ZERO,
    };
    /// Taken from a terminal holding no more than the newcomer's part: a keep-alive connection
    /// between two requests (closed gracefully, which every HTTP client expects), not a
    /// handshake under way.
    const IDLE_ANY: Ages = Ages {
        handshake: MIN_HANDSHAKE_AGE,
        idle: Duration::ZERO,
    };
}

/// The connection slots of one server: `max_connections` in all, a share per terminal.
pub struct Slots {
    table: Mutex<Table>,
    /// Told when a slot is freed (a waiting newcomer may try again).
    room: Notify,
    /// Told when the last connection closes (shutdown drain).
    empty: Notify,
    /// Newcomers waiting in [`Slots::admit`].
    parked: AtomicUsize,
    /// Set by [`Slots::shutdown`]: nothing more is admitted.
    closing: AtomicBool,
}

/// One admitted connection's slot; freed when dropped.
pub struct Slot {
    id: u64,
    kick: Arc<Notify>,
    slots: Arc<Slots>,
    /// Whether a request has begun on this connection (its first head was read).
    served: AtomicBool,
}

impl Slots {
    pub fn new(limit: usize, share: usize) -> Arc<Slots> {
        Arc::new(Slots {
            table: Mutex::new(Table {
                limit: limit.max(1),
                share: share.max(1),
                next: 0,
                conns: BTreeMap::new(),
                per_terminal: HashMap::new(),
            }),
            room: Notify::new(),
            empty: Notify::new(),
            parked: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reloaded `max_connections` and share. A terminal over its new share loses its
    /// handshakes and idle connections beyond it at once; busy ones finish (and are the first
    /// to go when another terminal needs room). Other open connections keep their slot (a
    /// smaller limit is reached as they close); new ones are admitted under the new values.
    pub fn configure(&self, limit: usize, share: usize) {
        let mut t = self.lock();
        t.limit = limit.max(1);
        t.share = share.max(1);
        t.shed_over_share(Instant::now());
        drop(t);
        self.room.notify_waiters();
    }

    /// Admits a connection of `terminal` if there is room, making room when needed: within its
    /// own share first (its own oldest handshake or idle connection), else in the whole table.
    /// `None`: no room now (see [`Slots::wait_for_room`]).
    pub fn try_admit(self: &Arc<Self>, terminal: Terminal) -> Option<Slot> {
        let now = Instant::now();
        let mut t = self.lock();
        // Under the lock: a connection admitted before `shutdown` took it is told to close.
        if self.closing.load(Ordering::Relaxed) {
            return None;
        }
        if t.count(&terminal) >= t.share {
            if !t.evict(now, Some(terminal), None, Ages::MIN) {
                return None;
            }
        } else if t.conns.len() >= t.limit
            && !t.evict(now, None, None, Ages::MIN)
            && !t.evict_from_bigger(now, terminal)
        {
            return None;
        }
        let id = t.next;
        t.next += 1;
        let kick = Arc::new(Notify::new());
        t.conns.insert(
            id,
            Entry {
                terminal,
                phase: Phase::Handshake,
                since: now,
                kick: kick.clone(),
            },
        );
        *t.per_terminal.entry(terminal).or_insert(0) += 1;
        Some(Slot {
            id,
            kick,
            slots: self.clone(),
            served: AtomicBool::new(false),
        })
    }

    /// Admits a connection of `terminal`, waiting up to [`PARK`] for room if there is none now
    /// (a slot freed, or a connection aging into evictability). `None`: close it unanswered.
    /// At most four times `max_connections` newcomers wait at once; beyond that they are closed
    /// at once. A newcomer is never queued behind others: whoever finds room first gets it.
    pub async fn admit(self: &Arc<Self>, terminal: Terminal) -> Option<Slot> {
        if let Some(s) = self.try_admit(terminal) {
            return Some(s);
        }
        let limit = self.lock().limit;
        if self.parked.fetch_add(1, Ordering::Relaxed) >= limit.saturating_mul(4) {
            self.parked.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let until = Instant::now() + PARK;
        let mut got = None;
        while Instant::now() < until {
            let _ = tokio::time::timeout(RETRY, self.room.notified()).await;
            got = self.try_admit(terminal);
            if got.is_some() || self.closing.load(Ordering::Relaxed) {
                break;
            }
        }
        self.parked.fetch_sub(1, Ordering::Relaxed);
        got
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.lock().conns.len()
    }

    /// The daemon is stopping: nothing more is admitted, and every open connection is told to
    /// close ([`Slot::evicted`] resolves, [`Slot::closing`] says why) once its answer in flight,
    /// if any, is written. Connections keep their slots until they close ([`Slots::drained`]).
    pub fn shutdown(&self) {
        let t = self.lock();
        self.closing.store(true, Ordering::Relaxed);
        for e in t.conns.values() {
            e.kick.notify_one();
        }
        drop(t);
        // Newcomers waiting for room give up at once.
        self.room.notify_waiters();
    }

    /// Waits until every connection has closed, or `max` passes; true if all closed.
    pub async fn drained(&self, max: Duration) -> bool {
        let until = Instant::now() + max;
        loop {
            let notified = self.empty.notified();
            if self.open() == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.open() == 0;
            }
        }
    }
}

impl Slot {
    /// Enters a new phase (the clock of the eviction ages restarts).
    /// Entering Idle over the terminal's share (lowered by a reload while this connection was
    /// busy) gives the slot up: the connection finishes its answer and closes.
    pub fn set_phase(&self, phase: Phase) {
        if matches!(phase, Phase::Busy | Phase::Streaming) {
            self.served.store(true, Ordering::Relaxed);
        }
        let mut t = self.slots.lock();
        let Some(e) = t.conns.get_mut(&self.id) else {
            return;
        };
        e.phase = phase;
        e.since = Instant::now();
        let terminal = e.terminal;
        if phase == Phase::Idle && t.count(&terminal) > t.share {
            if let Some(e) = t.remove(self.id) {
                e.kick.notify_one();
            }
            drop(t);
            self.slots.room.notify_one();
        }
    }

    /// Whether a request has begun on this connection (it entered `Busy` or `Streaming`).
    pub fn served(&self) -> bool {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether [`Slots::shutdown`] has told every connection to close.
    pub fn closing(&self) -> bool {
        self.slots.closing.load(Ordering::Relaxed)
    }

    /// The phase and since when; `None` once evicted.
    pub fn phase(&self) -> Option<(Phase, Instant)> {
        self.slots
            .lock()
            .conns
            .get(&self.id)
            .map(|e| (e.phase, e.since))
    }

    /// Resolves when this connection must close to make room.
    pub async fn evicted(&self) {
        self.kick.notified().await
    }

    /// The connection turned out to belong to `terminal` (the MAC behind an IPv6 address is known
    /// only after a neighbour lookup). Over that terminal's share, its own oldest handshake or
    /// idle connection makes room; false if none can, and this connection must close.
    pub fn rekey(&self, terminal: Terminal) -> bool {
        let mut t = self.slots.lock();
        let Some(old) = t.conns.get(&self.id).map(|e| e.terminal) else {
            return false;
        };
        if old == terminal {
            return true;
        }
        if t.count(&terminal) >= t.share
            && !t.evict(Instant::now(), Some(terminal), Some(self.id), Ages::MIN)
        {
            return false;
        }
        if let Some(e) = t.remove(self.id) {
            t.conns.insert(self.id, Entry { terminal, ..e });
            *t.per_terminal.entry(terminal).or_insert(0) += 1;
        }
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.lock();
        t.remove(self.id);
        let empty = t.conns.is_empty();
        drop(t);
        self.slots.room.notify_one();
        if empty {
            self.slots.empty.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_of_addresses() {
        let p = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(Terminal::of_ip(p("10.0.0.1")), Terminal::V4([10, 0, 0, 1]));
        assert_eq!(
            Terminal::of_ip(p("::ffff:10.0.0.1")),
            Terminal::V4([10, 0, 0, 1])
        );
        assert_ne!(
            Terminal::of_ip(p("2001:db8::1")),
            Terminal::of_ip(p("2001:db8::2"))
        );
        assert_eq!(
            Terminal::of_internet_ip(p("2001:db8:0:1::1")),
            Terminal::of_internet_ip(p("2001:db8:0:1:ffff::2"))
        );
        assert_ne!(
            Terminal::of_internet_ip(p("2001:db8:0:1::1")),
            Terminal::of_internet_ip(p("2001:db8:0:2::1"))
        );
    }

    fn v4(last: u8) -> Terminal {
        Terminal::V4([10, 0, 0, last])
    }

    #[tokio::test(start_paused = true)]
    async fn one_terminal_holds_at_most_its_share() {
        let s = Slots::new(8, 2);
        let a1 = s.try_admit(v4(1)).unwrap();
        let a2 = s.try_admit(v4(1)).unwrap();
        assert!(
            s.try_admit(v4(1)).is_none(),
            "young handshakes are not evicted"
        );
        let b = s.try_admit(v4(2));
        assert!(b.is_some(), "another terminal still gets in");
        tokio::time::advance(MIN_HANDSHAKE_AGE).await;
        // Its own oldest unfinished handshake makes room.
        let a3 = s.try_admit(v4(1)).unwrap();
        assert!(a1.phase().is_none(), "a1 was closed");
        assert!(a2.phase().is_some());
        drop((a2, a3, b));
        assert_eq!(s.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_tells_every_connection_and_admits_no_more() {
        let s = Slots::new(8, 8);
        let idle = s.try_admit(v4(1)).unwrap();
        idle.set_phase(Phase::Idle);
        let busy = s.try_admit(v4(2)).unwrap();
        busy.set_phase(Phase::Busy);
        assert!(busy.served() && !idle.served() && !idle.closing());
        s.shutdown();
        for slot in [&idle, &busy] {
            // Told at once, and keeping its slot until it closes (the drain waits for it).
            tokio::time::timeout(Duration::from_millis(1), slot.evicted())
                .await
                .expect("told to close");
            assert!(slot.closing() && slot.phase().is_some());
        }
        assert!(s.try_admit(v4(3)).is_none());
        assert!(s.admit(v4(3)).await.is_none());
        drop(idle);
        assert!(!s.drained(Duration::from_millis(10)).await, "busy is open");
        drop(busy);
        assert!(s.drained(Duration::ZERO).await);
    }

    #[tokio::test(start_paused = true)]
    async fn at_capacity_handshakes_then_idle_go_first_never_busy() {
        let s = Slots::new(3, 3);
        let busy = s.try_admit(v4(1)).unwrap();
        busy.set_phase(Phase::Busy);
        let idle = s.try_admit(v4(1)).unwrap();
        idle.set_phase(Phase::Idle);
        let hs = s.try_admit(v4(1)).unwrap();
        tokio::time::advance(MIN_IDLE_AGE).await;
        busy.set_phase(Phase::Busy);
        let n1 = s.try_admit(v4(2)).unwrap();
        assert!(hs.phase().is_none(), "the handshake went first");
        let n2 = s.try_admit(v4(3)).unwrap();
        assert!(idle.phase().is_none(), "then the idle one");
        assert!(s.try_admit(v4(4)).is_none(), "busy ones stay");
        assert!(busy.phase().is_some());
        drop((n1, n2));
    }

    #[tokio::test(start_paused = true)]
    async fn hosts_polling_within_their_shares_cannot_keep_another_out() {
        let s = Slots::new(8, 2);
        let mut held = Vec::new();
        for host in 1..=4 {
            for _ in 0..2 {
                let c = s.try_admit(v4(host)).unwrap();
                c.set_phase(Phase::Idle); // between two polls: never idle for long
                held.push(c);
            }
        }
        // Full, each at its share, nothing old enough: the biggest holders give way, one slot
        // at a time, to the terminal holding fewer.
        let fifth = s.try_admit(v4(5)).expect("a fifth terminal gets in");
        assert_eq!(held.iter().filter(|c| c.phase().is_none()).count(), 1);
        fifth.set_phase(Phase::Idle);
        // It holds 1, the others 2 or 1: nobody holds two more, so its second connection waits.
        assert!(s.try_admit(v4(5)).is_none());
        // A sixth terminal, holding none, gets one from a holder of 2.
        let sixth = s.try_admit(v4(6)).expect("a sixth terminal gets in");
        assert_eq!(held.iter().filter(|c| c.phase().is_none()).count(), 2);
        for c in held.iter().chain([&fifth, &sixth]) {
            if c.phase().is_some() {
                c.set_phase(Phase::Busy);
            }
        }
        assert!(
            s.try_admit(v4(7)).is_none(),
            "busy connections are never closed to make room"
        );
        drop((held, fifth, sixth));
        assert_eq!(s.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_share_sheds_idle_connections_at_once_and_busy_ones_stay() {
        let s = Slots::new(16, 8);
        let conns: Vec<Slot> = (0..6).map(|_| s.try_admit(v4(1)).unwrap()).collect();
        conns[0].set_phase(Phase::Busy);
        conns[1].set_phase(Phase::Busy);
        conns[2].set_phase(Phase::Busy);
        for c in &conns[3..] {
            c.set_phase(Phase::Idle);
        }
        s.configure(16, 2);
        // Three busy ones stay (over the share of 2, they finish); the idle ones go.
        let open: Vec<bool> = conns.iter().map(|c| c.phase().is_some()).collect();
        assert_eq!(open, [true, true, true, false, false, false]);
        // Another terminal is admitted; this one's own newcomers are not.
        let other = s.try_admit(v4(2)).unwrap();
        assert!(s.try_admit(v4(1)).is_none());
        drop((conns, other));
    }

    #[tokio::test(start_paused = true)]
    async fn as_many_terminals_as_slots_polling_do_not_keep_another_out() {
        let s = Slots::new(4, 1);
        let held: Vec<Slot> = (1..=4)
            .map(|h| {
                let c = s.try_admit(v4(h)).unwrap();
                c.set_phase(Phase::Idle);
                c
            })
            .collect();
        let fifth = s
            .try_admit(v4(5))
            .expect("a terminal holding nothing gets in");
        assert_eq!(held.iter().filter(|c| c.phase().is_none()).count(), 1);
        // Not over a young handshake (the fifth's): a sixth waits for an idle connection.
        for c in &held {
            if c.phase().is_some() {
                c.set_phase(Phase::Busy);
            }
        }
        assert!(s.try_admit(v4(6)).is_none());
        drop((held, fifth));
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connections_over_a_lowered_share_go_after_their_answer() {
        let s = Slots::new(16, 8);
        let conns: Vec<Slot> = (0..4).map(|_| s.try_admit(v4(1)).unwrap()).collect();
        for c in &conns {
            c.set_phase(Phase::Busy);
        }
        s.configure(16, 2);
        assert!(
            conns.iter().all(|c| c.phase().is_some()),
            "busy ones finish"
        );
        for c in &conns {
            c.set_phase(Phase::Idle);
        }
        // The first two answered while the terminal was over its share: they went.
        let open: Vec<bool> = conns.iter().map(|c| c.phase().is_some()).collect();
        assert_eq!(open, [false, false, true, true]);
        drop(conns);
        assert_eq!(s.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn reconfigure_and_rekey() {
        let s = Slots::new(4, 4);
        let a = s.try_admit(Terminal::V6(1)).unwrap();
        let b = s.try_admit(Terminal::V6(2)).unwrap();
        s.configure(4, 1);
        let mac = Terminal::Mac([2, 0, 0, 0, 0, 1]);
        assert!(a.rekey(mac));
        assert!(
            !b.rekey(mac),
            "the MAC's share is taken by a young handshake"
        );
        tokio::time::advance(MIN_HANDSHAKE_AGE).await;
        assert!(b.rekey(mac), "now a is old enough to make room");
        assert!(a.phase().is_none());
        s.configure(1, 1);
        assert!(s.try_admit(v4(9)).is_none() || s.open() <= 2);
        drop(b);
        assert!(s.drained(Duration::from_millis(10)).await);
    }
}
