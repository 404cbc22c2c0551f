//! Fair shares: who a connection belongs to (its terminal), and the connection slots, counted
//! per terminal so that one host cannot take what the others need. At capacity, a terminal
//! holding fewer slots than another takes one of that terminal's, the cheapest to lose first
//! (contract §4 rev. 3): a silent handshake, a handshake, an idle connection, a request still
//! arriving, a stream; an answer being prepared or written is never cut (a busy holder owes its
//! slot after its answer). A new connection making progress keeps its slot for [`TENURE`].
//! Room freed or taken goes to the waiting terminals in turn, longest waiting first.
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A TLS handshake on a LAN takes milliseconds, even on a box's CPU with many at once: a
/// terminal's own handshake not finished after this long may be closed to make room for its
/// next connection.
pub const MIN_HANDSHAKE_AGE: Duration = Duration::from_millis(100);
/// A terminal's own keep-alive connection idle this long may be closed to make room for its next
/// connection (a page polling the counters every few hundred milliseconds keeps its connection).
pub const MIN_IDLE_AGE: Duration = Duration::from_millis(500);
/// A connection closed to make room while an answer was still being written gets this long to
/// finish it (servers shut such a connection down gracefully: no further request is read).
pub const EVICTED_LINGER: Duration = Duration::from_secs(1);
/// A new connection whose client is making progress (past a silent handshake) keeps its slot
/// this long against other terminals: with more terminals than slots, each newcomer would
/// otherwise take the youngest connection around, a probe's own, before it could be answered.
pub const TENURE: Duration = Duration::from_millis(300);
/// How long a newcomer finding no room waits for some before it is closed.
pub const PARK: Duration = Duration::from_secs(1);
/// A waiting newcomer looks again this often (connections age into ones that may give way
/// without telling anyone; a slot freed or taken for it wakes it at once).
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
    /// A trusted proxy (the authority's load balancers): many clients behind one address, so no
    /// share of its own; it holds whatever `max_connections` leaves, and gives way to others at
    /// capacity like any terminal holding more.
    Proxy(u128),
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

    /// A trusted proxy's address.
    pub fn of_proxy(ip: IpAddr) -> Terminal {
        Terminal::Proxy(match ip.to_canonical() {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6),
        })
    }

    fn has_share(&self) -> bool {
        !matches!(self, Terminal::Proxy(_))
    }
}

/// Where a connection is in its life; what it costs to close it to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, TLS handshake not finished.
    Handshake,
    /// Waiting for a request head (the first one, or the next on a kept-alive connection), no
    /// byte of it read yet.
    Idle,
    /// A request head is arriving (bytes read, head not complete).
    Head,
    /// A request body is arriving (the head was read, the body is not complete).
    Body,
    /// A request is being answered.
    Busy,
    /// Its answer is a stream (`/v1/counters/stream`), writing for up to its time limit.
    Streaming,
}

struct Entry {
    terminal: Terminal,
    phase: Phase,
    /// When the current phase began (a head arriving keeps its idle time's start).
    since: Instant,
    /// When it was admitted.
    admitted: Instant,
    /// Its slot is owed to this terminal once the answer being prepared is handed over (a
    /// terminal holding more, whose connections are all answering), until that instant.
    owed_to: Option<(Terminal, Instant)>,
    /// Bytes arrived during the handshake (a client speaking TLS, not a socket held open).
    heard: bool,
    /// Told when this connection must close.
    kick: Arc<Kick>,
}

/// What closing a connection to make room costs, cheapest first (contract §4 rev. 3); `None`:
/// never closed to make room (an answer being prepared or written).
fn cost(e: &Entry) -> Option<u8> {
    match e.phase {
        Phase::Handshake if !e.heard => Some(0),
        Phase::Handshake => Some(1),
        Phase::Idle => Some(2),
        Phase::Head | Phase::Body => Some(3),
        Phase::Streaming => Some(STREAM),
        Phase::Busy => None,
    }
}

/// A stream's cost, the dearest of what may go.
const STREAM: u8 = 4;
/// A handshake whose client has not sent a whole ClientHello: a socket held open costs nothing.
const SILENT: u8 = 0;
/// The most a terminal's own connections give way to its next one: handshakes and idle ones.
const OWN: u8 = 2;
/// The most shed at once when a reload lowers the share (streams and answers finish).
const SHED: u8 = 3;
/// Anything but an answer being prepared or written.
const ANY: u8 = 4;

/// How a connection was told to close.
struct Kick {
    notify: Notify,
    /// Closed to make room while no answer of it could be under way (handshake, request still
    /// arriving): the connection is dropped at once, not shut down gracefully.
    abrupt: AtomicBool,
}

struct Table {
    limit: usize,
    share: usize,
    next: u64,
    /// Open connections by admission order.
    conns: BTreeMap<u64, Entry>,
    per_terminal: HashMap<Terminal, usize>,
    /// Slots kept for a waiting terminal (freed, taken for it, or given up by a connection that
    /// owed it), until.
    reserved: Vec<(Terminal, Instant)>,
    /// Terminals whose newcomers wait for room, longest waiting first, one entry each.
    queue: Vec<Queued>,
    /// Newcomers waiting, all terminals together.
    parked: usize,
}

/// A terminal with newcomers waiting for room ([`Slots::admit`]).
struct Queued {
    terminal: Terminal,
    /// How many (at most its share, those pushed out included).
    waiting: usize,
    /// How many of them were pushed out for another terminal's ([`Table::push_out`]), not yet gone.
    pushed: usize,
    /// Told when a slot is kept for it ([`Table::grant`]).
    wake: Arc<Notify>,
}

impl Table {
    fn count(&self, t: &Terminal) -> usize {
        self.per_terminal.get(t).copied().unwrap_or(0)
    }

    fn over_share(&self, t: &Terminal, extra: usize) -> bool {
        t.has_share() && self.count(t) + extra > self.share
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

    /// Closes the cheapest connection that `of` accepts (given its terminal's count), costing at most `max_cost` and old
    /// enough by `ages`: the cheapest kind first, then the terminal holding the most, then the
    /// oldest in its phase (a stale half-open connection before a fresh one that is being set
    /// up). The closed one's admission time, if one was closed.
    fn evict(
        &mut self,
        now: Instant,
        of: impl Fn(usize, u64, &Entry) -> bool,
        max_cost: u8,
        ages: Ages,
    ) -> Option<Instant> {
        let victim = self
            .conns
            .iter()
            .filter_map(|(id, e)| {
                let held = self.count(&e.terminal);
                let c = cost(e).filter(|c| *c <= max_cost && ages.allow(e, now))?;
                of(held, *id, e).then_some(((c, Reverse(held), e.since), *id))
            })
            .min_by_key(|(key, _)| *key)
            .map(|(_, id)| id);
        match victim.and_then(|id| self.remove(id)) {
            Some(e) => {
                let abrupt = matches!(e.phase, Phase::Handshake | Phase::Head | Phase::Body);
                e.kick.abrupt.store(abrupt, Ordering::Relaxed);
                e.kick.notify.notify_one();
                Some(e.admitted)
            }
            None => None,
        }
    }

    /// One of `t`'s own handshakes or idle connections old enough to be given up for its next
    /// one; its admission time, which the next one inherits (replacing its own connections does
    /// not renew a terminal's tenure).
    fn evict_own(&mut self, now: Instant, t: Terminal, spare: Option<u64>) -> Option<Instant> {
        let of = |_, id, e: &Entry| e.terminal == t && Some(id) != spare;
        self.evict(now, of, OWN, Ages::MIN)
    }

    /// Makes room at capacity for `newcomer`, which holds `have` slots (kept for it included): a
    /// terminal holding more gives one up, whatever the age of the connection (contract §4 rev.
    /// 3). Without this, four hosts each polling within its quarter, or half-open connections
    /// churning from many addresses, would hold every slot. Anyone's silent handshake goes first;
    /// else the terminal holding the most gives up its cheapest connection past its tenure, and
    /// among terminals holding as many, the one whose connection that may go has been held
    /// longest (it has had its turn): with more terminals than slots, a newcomer's fresh
    /// handshake is not the next to go, as it would be if the cheapest connection anywhere went
    /// first (sixteen addresses with slow heads against eight slots kept a probe out). When all
    /// of that terminal's connections are answering, the longest held owes its slot after its
    /// answer. `Some(true)`: room made; `Some(false)`: a slot is owed to it; `None`: nothing to
    /// take for a terminal holding `have` (nor for one holding more).
    fn evict_for(&mut self, now: Instant, newcomer: Terminal, have: usize) -> Option<bool> {
        if self
            .evict(now, |held, _, _| held > have, SILENT, Ages::ANY)
            .is_some()
        {
            return Some(true);
        }
        // Already owed a slot: it waits for it rather than take another.
        let owed =
            |e: &Entry| matches!(e.owed_to, Some((t, until)) if t == newcomer && until > now);
        if self.conns.values().any(owed) {
            return Some(false);
        }
        let settled = |e: &Entry| now.duration_since(e.admitted) >= TENURE;
        // One pass, no allocation: a connection past its tenure that may go, or is answering
        // and owes nothing yet, names its terminal; among terminals holding as many, a stream
        // last, then the one admitted first (never a map's order).
        let victim = self
            .conns
            .iter()
            .filter_map(|(id, e)| {
                let held = self.count(&e.terminal);
                let may = held > have && settled(e) && (cost(e).is_some() || e.owed_to.is_none());
                // A stream, the dearest to lose, names its terminal only when no terminal holding
                // as many has anything else that may go: opened first, streams are the oldest
                // connections, and one was cut while its terminal's slow head was in its tenure
                // and another terminal's head could have gone.
                let stream = e.phase == Phase::Streaming;
                may.then_some(((held, !stream, Reverse((e.admitted, *id))), e.terminal))
            })
            .max_by_key(|(key, _)| *key)?
            .1;
        if self
            .evict(
                now,
                |_, _, e| e.terminal == victim && settled(e),
                ANY,
                Ages::ANY,
            )
            .is_some()
        {
            return Some(true);
        }
        // All of its connections are answering: the longest held owes its slot after its answer.
        if let Some(e) = self.conns.values_mut().find(|e| {
            e.terminal == victim
                && e.phase == Phase::Busy
                && e.owed_to.is_none()
                && now.duration_since(e.admitted) >= TENURE
        }) {
            e.owed_to = Some((newcomer, now + PARK));
        }
        Some(false)
    }

    /// Room for a newcomer of `terminal`, the waiting terminals served first; when it counts as
    /// admitted (a slot its own terminal gives up passes on its age). `None`: no room now.
    fn room_for(&mut self, now: Instant, terminal: Terminal) -> Option<Instant> {
        if self.over_share(&terminal, 1) {
            return self.evict_own(now, terminal, None);
        }
        self.serve(now);
        let mine = self.reserved.iter().position(|(r, _)| *r == terminal);
        if let Some(i) = mine.filter(|_| self.conns.len() < self.limit) {
            self.reserved.swap_remove(i);
        } else if self.conns.len() + self.reserved.len() >= self.limit
            && self.evict_for(now, terminal, self.count(&terminal)) != Some(true)
        {
            return None;
        }
        Some(now)
    }

    /// Gives the room there is, or can be made, to the waiting terminals in turn, longest waiting
    /// first, before any newcomer that has not waited: sixteen addresses each opening a
    /// connection every 20 ms won nearly every slot freed or aged from a probe's newcomer, which
    /// looked again only every 100 ms. A terminal that cannot be given room now (over its share,
    /// or nothing to take for it) keeps its place; once nothing can be taken for a terminal
    /// holding `n`, none is tried for one holding as many or more.
    fn serve(&mut self, now: Instant) {
        self.reserved.retain(|(_, until)| *until > now);
        let mut stuck = usize::MAX;
        let mut i = 0;
        // Each turn moves on or keeps a slot for a waiting newcomer (at most one each).
        while let Some(q) = self.queue.get(i) {
            let (t, waiting) = (q.terminal, q.waiting.saturating_sub(q.pushed));
            let kept = self.reserved.iter().filter(|(r, _)| *r == t).count();
            let have = self.count(&t) + kept;
            i += 1;
            if kept >= waiting || have >= stuck || self.over_share(&t, kept + 1) {
                continue;
            }
            if self.conns.len() + self.reserved.len() >= self.limit {
                match self.evict_for(now, t, have) {
                    Some(true) => {}
                    Some(false) => continue,
                    None => {
                        stuck = have;
                        continue;
                    }
                }
            }
            // It goes to the back: the entry behind it is now at `i - 1`.
            self.grant(t, now);
            i -= 1;
        }
    }

    /// Keeps a slot for `t` and wakes one of its waiting newcomers; `t` goes to the back of the
    /// queue. A terminal no longer waiting (a slot owed to it is given up after its wait ran out)
    /// has none kept: the next in turn has it.
    fn grant(&mut self, t: Terminal, now: Instant) {
        let Some(i) = self
            .queue
            .iter()
            .position(|q| q.terminal == t && q.waiting > q.pushed)
        else {
            return self.serve(now);
        };
        let kept = self.reserved.iter().filter(|(r, _)| *r == t).count();
        if self.queue[i].waiting - self.queue[i].pushed <= kept {
            return self.serve(now);
        }
        self.reserved.push((t, now + PARK));
        let q = self.queue.remove(i);
        q.wake.notify_one();
        self.queue.push(q);
    }

    /// One of `terminal`'s waiting newcomers leaves the queue; `pushed`: it was pushed out, no
    /// longer counted in the room.
    fn leave(&mut self, terminal: Terminal, mut pushed: bool) {
        let Some(i) = self.queue.iter().position(|q| q.terminal == terminal) else {
            return;
        };
        let q = &mut self.queue[i];
        q.waiting = q.waiting.saturating_sub(1);
        // Whatever ends its wait, it stands for one of its terminal's pushed out, if any.
        if !pushed && q.pushed > 0 {
            q.pushed -= 1;
            pushed = true;
        }
        q.pushed = q.pushed.min(q.waiting);
        if !pushed {
            self.parked = self.parked.saturating_sub(1);
        }
        if self.queue[i].waiting == 0 {
            self.queue.remove(i);
            // A slot kept for it that none of its newcomers will take goes to the next (not
            // otherwise: the slot it was just given is silent until its ClientHello is read).
            let kept = self.reserved.len();
            self.reserved.retain(|(r, _)| *r != terminal);
            if self.reserved.len() < kept {
                self.serve(Instant::now());
            }
        }
    }

    /// The waiting room is full (eight times `max_connections`): one newcomer of the terminal with
    /// the most waiting (then holding the most) is closed, so that a terminal with none waiting
    /// can wait. False: none left to push out.
    fn push_out(&mut self) -> bool {
        let per = &self.per_terminal;
        let Some(q) = self
            .queue
            .iter_mut()
            .filter(|q| q.waiting > q.pushed)
            .max_by_key(|q| (q.waiting.saturating_sub(q.pushed), per.get(&q.terminal)))
        else {
            return false;
        };
        q.pushed += 1;
        q.wake.notify_one();
        self.parked = self.parked.saturating_sub(1);
        true
    }

    /// Closes what a terminal holds beyond its share (handshakes, idle connections and requests
    /// still arriving, of any age; answers and streams finish).
    fn shed_over_share(&mut self, now: Instant) {
        let over: Vec<Terminal> = self
            .per_terminal
            .keys()
            .filter(|t| self.over_share(t, 0))
            .copied()
            .collect();
        for t in over {
            while self.over_share(&t, 0)
                && self
                    .evict(now, |_, _, e| e.terminal == t, SHED, Ages::ANY)
                    .is_some()
            {}
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
    /// For a terminal's own connections: none that may still be in use.
    const MIN: Ages = Ages {
        handshake: MIN_HANDSHAKE_AGE,
        idle: MIN_IDLE_AGE,
    };
    /// Taken for another terminal holding fewer (closed gracefully when an answer may be under
    /// way: it is finished).
    const ANY: Ages = Ages {
        handshake: Duration::ZERO,
        idle: Duration::ZERO,
    };

    fn allow(&self, e: &Entry, now: Instant) -> bool {
        let age = now.duration_since(e.since);
        match e.phase {
            Phase::Handshake => age >= self.handshake,
            Phase::Idle => age >= self.idle,
            _ => true,
        }
    }
}

/// The connection slots of one server: `max_connections` in all, a share per terminal.
pub struct Slots {
    table: Mutex<Table>,
    /// Told when the last connection closes (shutdown drain).
    empty: Notify,
    /// Set by [`Slots::shutdown`]: nothing more is admitted.
    closing: AtomicBool,
}

/// One admitted connection's slot; freed when dropped.
pub struct Slot {
    id: u64,
    kick: Arc<Kick>,
    slots: Arc<Slots>,
    /// Whether a request has begun on this connection (its first head was read).
    served: AtomicBool,
    /// Nothing read since the handshake began or the connection went idle: the first byte read
    /// changes what closing it costs ([`Slot::heard`]).
    quiet: AtomicBool,
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
                reserved: Vec::new(),
                queue: Vec::new(),
                parked: 0,
            }),
            empty: Notify::new(),
            closing: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reloaded `max_connections` and share. A terminal over its new share loses its
    /// handshakes, idle connections and requests still arriving beyond it at once; answers and
    /// streams finish, and a connection that goes idle over the share then gives its slot up
    /// ([`Slot::set_phase`]). Other open connections keep their slot (a smaller limit is
    /// reached as they close); new ones are admitted under the new values.
    pub fn configure(&self, limit: usize, share: usize) {
        let mut t = self.lock();
        t.limit = limit.max(1);
        t.share = share.max(1);
        let now = Instant::now();
        t.shed_over_share(now);
        t.serve(now);
    }

    /// Admits a connection of `terminal` if there is room, making room when needed: within its
    /// own share first (its own oldest handshake or idle connection), else in the whole table,
    /// once the waiting terminals are served. `None`: no room now ([`Slots::admit`] waits).
    pub fn try_admit(self: &Arc<Self>, terminal: Terminal) -> Option<Slot> {
        self.admit_in(&mut self.lock(), terminal)
    }

    /// [`Slots::try_admit`] under the lock `t`: a newcomer finding no room joins the queue under
    /// the same lock, so no slot freed in between passes it by.
    fn admit_in(self: &Arc<Self>, t: &mut Table, terminal: Terminal) -> Option<Slot> {
        let now = Instant::now();
        // Under the lock: a connection admitted before `shutdown` took it is told to close.
        if self.closing.load(Ordering::Relaxed) {
            return None;
        }
        let admitted = t.room_for(now, terminal)?;
        let id = t.next;
        t.next += 1;
        let kick = Arc::new(Kick {
            notify: Notify::new(),
            abrupt: AtomicBool::new(false),
        });
        t.conns.insert(
            id,
            Entry {
                terminal,
                phase: Phase::Handshake,
                since: now,
                admitted,
                owed_to: None,
                heard: false,
                kick: kick.clone(),
            },
        );
        *t.per_terminal.entry(terminal).or_insert(0) += 1;
        Some(Slot {
            id,
            kick,
            slots: self.clone(),
            served: AtomicBool::new(false),
            quiet: AtomicBool::new(true),
        })
    }

    /// Admits a connection of `terminal`, waiting up to [`PARK`] for room if there is none now.
    /// `None`: close it unanswered. Waiting terminals are served in turn, longest waiting first:
    /// a slot freed, taken from a terminal holding more or owed goes to the first that may have
    /// it, and wakes its newcomer. Each terminal has at most its share of newcomers waiting, and
    /// all together at most eight times `max_connections`; beyond that they are closed at once
    /// (one terminal opening connections without end cannot fill the waiting room for others),
    /// but a terminal with none waiting pushes out another's ([`Table::push_out`]): a waiter costs
    /// only a socket, and many terminals each keeping a few waiting cannot keep another out.
    pub async fn admit(self: &Arc<Self>, terminal: Terminal) -> Option<Slot> {
        let wake = {
            let mut t = self.lock();
            if let Some(s) = self.admit_in(&mut t, terminal) {
                return Some(s);
            }
            let i = t.queue.iter().position(|q| q.terminal == terminal);
            // Over the room too after a reload lowered `max_connections`: as many go as needed.
            while t.parked >= t.limit.saturating_mul(8) {
                if i.is_some() || !t.push_out() {
                    return None;
                }
            }
            let i = match i {
                Some(i) if t.queue[i].waiting >= t.share => return None,
                Some(i) => i,
                None => {
                    t.queue.push(Queued {
                        terminal,
                        waiting: 0,
                        pushed: 0,
                        wake: Arc::new(Notify::new()),
                    });
                    t.queue.len() - 1
                }
            };
            t.parked += 1;
            t.queue[i].waiting += 1;
            t.queue[i].wake.clone()
        };
        // Leaves the queue however this ends, dropped while waiting too: a count left behind
        // would have slots kept and connections evicted for a newcomer that is gone.
        let mut parked = Parked {
            slots: self,
            terminal,
            left: false,
        };
        let until = Instant::now() + PARK;
        loop {
            let _ = tokio::time::timeout(RETRY, wake.notified()).await;
            let mut t = self.lock();
            let got = self.admit_in(&mut t, terminal);
            // Given nothing, and one of its terminal's is pushed out: this one.
            let out = |q: &&mut Queued| q.terminal == terminal && q.pushed > 0 && got.is_none();
            let pushed = match t.queue.iter_mut().find(out) {
                Some(q) => {
                    q.pushed -= 1;
                    true
                }
                None => false,
            };
            if got.is_some()
                || pushed
                || self.closing.load(Ordering::Relaxed)
                || Instant::now() >= until
            {
                // Under the same lock as the claim: on the authority's threads another newcomer
                // could otherwise push out the same waiter again before it left, and the counts
                // would drift (the waiting room full for good, or more pushed than waiting).
                t.leave(terminal, pushed);
                parked.left = true;
                return got;
            }
        }
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
            e.kick.notify.notify_one();
        }
        // Newcomers waiting for room give up at once.
        for q in &t.queue {
            q.wake.notify_waiters();
        }
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

/// A newcomer of `terminal` waiting in [`Slots::admit`]; dropped while waiting, it leaves the
/// queue.
struct Parked<'a> {
    slots: &'a Slots,
    terminal: Terminal,
    /// It has left (under the lock of its last look).
    left: bool,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        if !self.left {
            self.slots.lock().leave(self.terminal, false);
        }
    }
}

impl Slot {
    /// Enters a new phase (the clock of the eviction ages restarts).
    /// Entering Idle over the terminal's share (lowered by a reload while this connection was
    /// busy) gives the slot up: the connection finishes its answer and closes.
    pub fn set_phase(&self, phase: Phase) {
        if matches!(phase, Phase::Body | Phase::Busy | Phase::Streaming) {
            self.served.store(true, Ordering::Relaxed);
        }
        let mut t = self.slots.lock();
        let Some(e) = t.conns.get_mut(&self.id) else {
            return;
        };
        e.phase = phase;
        e.since = Instant::now();
        if phase == Phase::Idle {
            // Under the lock, after the phase: the next byte read is its next head's.
            self.quiet.store(true, Ordering::Relaxed);
        }
        let owed = e.owed_to.take().filter(|(_, until)| *until > e.since);
        if let (Phase::Idle, Some((to, _))) = (phase, owed) {
            // Its answer is handed over (hyper finishes writing it): the slot goes to the
            // terminal it was owed to, which is waiting for it.
            let now = e.since;
            if let Some(e) = t.remove(self.id) {
                e.kick.notify.notify_one();
            }
            t.grant(to, now);
            return;
        }
        let (terminal, now) = (e.terminal, e.since);
        if phase == Phase::Idle && t.over_share(&terminal, 0) {
            if let Some(e) = t.remove(self.id) {
                e.kick.notify.notify_one();
            }
            t.serve(now);
        }
    }

    /// Whether a request has begun on this connection (its head was read).
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
        self.kick.notify.notified().await
    }

    /// Whether it was closed to make room with no answer of it under way (a handshake, a
    /// request still arriving): it is dropped at once rather than shut down gracefully.
    pub fn abrupt(&self) -> bool {
        self.kick.abrupt.load(Ordering::Relaxed)
    }

    /// Bytes arrived on the connection ([`Watched`] says so): a handshake that is heard costs
    /// more to lose than a silent one, and an idle connection becomes a request head arriving.
    /// One atomic load per read once said.
    pub fn heard(&self) {
        if !self.quiet.load(Ordering::Relaxed) || !self.quiet.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut t = self.slots.lock();
        if let Some(e) = t.conns.get_mut(&self.id) {
            match e.phase {
                Phase::Handshake => e.heard = true,
                // Its head's deadline still runs from the idle time's start.
                Phase::Idle => e.phase = Phase::Head,
                _ => {}
            }
        }
    }

    /// A request's body begins or ends arriving ([`Arriving`]): `from` becomes `to`.
    fn shift(&self, from: Phase, to: Phase) {
        let mut t = self.slots.lock();
        if let Some(e) = t.conns.get_mut(&self.id) {
            if e.phase == from {
                e.phase = to;
                e.since = Instant::now();
            }
        }
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
        if t.over_share(&terminal, 1)
            && t.evict_own(Instant::now(), terminal, Some(self.id))
                .is_none()
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
        // The slot freed goes to the waiting terminal whose turn it is, if any.
        if !t.queue.is_empty() {
            t.serve(Instant::now());
        }
        let empty = t.conns.is_empty();
        drop(t);
        if empty {
            self.slots.empty.notify_waiters();
        }
    }
}

/// A connection's byte stream, telling its slot when bytes arrive ([`Slot::heard`]): during the
/// handshake once the client's first TLS record (its ClientHello) is whole, later at any byte. A
/// few bytes of a record, which costs an attacker nothing to send from many sockets, leave a
/// handshake as cheap to lose as a silent one.
pub struct Watched<T> {
    inner: T,
    slot: Arc<Slot>,
    hello: Hello,
}

/// How much of the client's first TLS record has arrived.
enum Hello {
    /// Its 5-byte header, `got` of them so far.
    Header {
        head: [u8; 5],
        got: usize,
    },
    /// The record's body, `left` bytes still to come.
    Body {
        left: usize,
    },
    Whole,
}

impl Hello {
    /// Takes in bytes read; true once the record is whole.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            match self {
                Hello::Header { head, got } => {
                    let n = (head.len() - *got).min(bytes.len());
                    head[*got..*got + n].copy_from_slice(&bytes[..n]);
                    *got += n;
                    bytes = &bytes[n..];
                    if *got == head.len() {
                        let left = usize::from(u16::from_be_bytes([head[3], head[4]]));
                        *self = Hello::Body { left };
                    }
                }
                Hello::Body { left } => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        *self = Hello::Whole;
                    }
                }
                Hello::Whole => break,
            }
        }
        if let Hello::Body { left: 0 } = self {
            *self = Hello::Whole;
        }
        matches!(self, Hello::Whole)
    }
}

impl<T> Watched<T> {
    pub fn new(inner: T, slot: Arc<Slot>) -> Self {
        Watched {
            inner,
            slot,
            hello: Hello::Header {
                head: [0; 5],
                got: 0,
            },
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            let this = &mut *self;
            if matches!(this.hello, Hello::Whole) || this.hello.feed(new) {
                this.slot.heard();
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request's body, telling its connection's slot where the request is: being answered
/// ([`Phase::Busy`]) from its head on, [`Phase::Body`] while its handler reads a body not all
/// arrived yet, Busy again once it has or the handler stops reading. A handler that never reads it (a GET sent with a body)
/// leaves the request Busy: it is never dropped to make room while it is answered. Give it to the
/// request's handler in place of hyper's body ([`Arriving::begin`]).
pub struct Arriving<B> {
    inner: B,
    /// While a body may still come: the slot, and whether the request is said to be in `Body`.
    slot: Option<(Arc<Slot>, bool)>,
}

impl<B: http_body::Body + Unpin> Arriving<B> {
    /// The request `req` begins on the connection of `slot`: it is being answered.
    pub fn begin(req: http::Request<B>, slot: &Arc<Slot>) -> http::Request<Arriving<B>> {
        slot.set_phase(Phase::Busy);
        let slot = (!req.body().is_end_stream()).then(|| (slot.clone(), false));
        req.map(|inner| Arriving { inner, slot })
    }
}

/// A handler that stops reading (a body too large or too slow) answers without it: the request
/// is being answered, no longer arriving, and is not cut to make room while its answer goes out.
impl<B> Drop for Arriving<B> {
    fn drop(&mut self) {
        if let Some((slot, true)) = &self.slot {
            slot.shift(Phase::Body, Phase::Busy);
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Arriving<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        let ended = matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            || this.inner.is_end_stream();
        if let Some((slot, arriving)) = &mut this.slot {
            // Read and not whole: arriving; whole after arriving: answered (whole at once: as it
            // was).
            if ended == *arriving {
                let (from, to) = if ended {
                    (Phase::Body, Phase::Busy)
                } else {
                    (Phase::Busy, Phase::Body)
                };
                slot.shift(from, to);
                *arriving = !ended;
            }
            if ended {
                this.slot = None;
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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
    async fn at_capacity_the_cheapest_to_lose_goes_first_never_an_answer() {
        let s = Slots::new(7, 7);
        let one = |phase: Option<Phase>| {
            let c = Arc::new(s.try_admit(v4(1)).unwrap());
            if let Some(p) = phase {
                c.set_phase(p);
            }
            c
        };
        let busy = one(Some(Phase::Busy));
        let stream = one(Some(Phase::Streaming));
        // Admitted before the head, but its body begins after the head does.
        let body = one(None);
        let head = one(Some(Phase::Idle));
        head.heard();
        tokio::time::advance(Duration::from_millis(10)).await;
        body.set_phase(Phase::Body);
        let idle = one(Some(Phase::Idle));
        let heard = one(None);
        heard.heard();
        let silent = one(None);
        // Young, all of them: age does not matter for a terminal holding fewer. A head and a
        // body arriving cost the same: the one longer in its phase goes first (the head), not
        // the one admitted first.
        let order = [&silent, &heard, &idle, &head, &body, &stream];
        // Past their tenure: young connections whose clients make progress are kept.
        tokio::time::advance(TENURE).await;
        let mut newcomers = Vec::new();
        for (i, victim) in order.iter().enumerate() {
            let n = s.try_admit(v4(10 + i as u8)).expect("room made");
            n.set_phase(Phase::Busy);
            newcomers.push(n);
            assert!(victim.phase().is_none(), "victim {i} went");
            let abrupt = !matches!(i, 2 | 5);
            assert_eq!(victim.abrupt(), abrupt, "victim {i}");
            assert!(order[i + 1..].iter().all(|c| c.phase().is_some()));
        }
        assert!(s.try_admit(v4(20)).is_none(), "an answer is never cut");
        assert!(busy.phase().is_some());
        drop(newcomers);
    }

    #[tokio::test(start_paused = true)]
    async fn among_equal_holders_the_longest_held_gives_way_not_a_fresh_handshake() {
        let s = Slots::new(3, 3);
        let head = s.try_admit(v4(1)).unwrap();
        head.set_phase(Phase::Idle);
        head.heard();
        tokio::time::advance(Duration::from_millis(300)).await;
        let other = s.try_admit(v4(2)).unwrap();
        other.set_phase(Phase::Busy);
        tokio::time::advance(Duration::from_millis(300)).await;
        // A newcomer's handshake under way (its ClientHello whole), the youngest slot.
        let fresh = s.try_admit(v4(3)).unwrap();
        fresh.heard();
        let n = s.try_admit(v4(4)).expect("room made");
        assert!(head.phase().is_none(), "the slot held longest went");
        assert!(
            fresh.phase().is_some(),
            "not the fresh handshake, though cheaper"
        );
        // A silent handshake (n's: nothing read yet) goes before anything, the youngest too.
        let n5 = s.try_admit(v4(5)).expect("room made");
        assert!(n.phase().is_none(), "the silent handshake went");
        assert!(fresh.phase().is_some());
        drop((other, fresh, n, n5));
    }

    /// On the authority's threads: newcomers of many terminals waiting, pushed out, admitted and
    /// timing out at once leave the counts exact (nothing parked once all are gone).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiting_counts_stay_exact_across_threads() {
        let s = Slots::new(1, 1);
        let held = s.try_admit(v4(200)).unwrap();
        held.set_phase(Phase::Busy);
        let tasks: Vec<_> = (0..64u8)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let got = s.admit(v4(i % 32)).await;
                    drop(got);
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        drop(held);
        let t = s.lock();
        assert!(
            t.parked == 0 && t.queue.is_empty(),
            "left behind: {} parked",
            t.parked
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_is_not_cut_while_another_terminal_has_a_head_that_may_go() {
        let s = Slots::new(4, 2);
        // Streams opened first, the oldest connections; then a slow head each.
        let sa = s.try_admit(v4(1)).unwrap();
        sa.set_phase(Phase::Streaming);
        let sb = s.try_admit(v4(2)).unwrap();
        sb.set_phase(Phase::Streaming);
        tokio::time::advance(TENURE).await;
        let hb = s.try_admit(v4(2)).unwrap();
        hb.set_phase(Phase::Head);
        tokio::time::advance(TENURE).await;
        // v4(1)'s head is a replacement still in its tenure; v4(2)'s is past it.
        let ha = s.try_admit(v4(1)).unwrap();
        ha.set_phase(Phase::Head);
        let n = s.try_admit(v4(3)).expect("room made");
        assert!(hb.phase().is_none(), "v4(2)'s slow head went");
        assert!(
            sa.phase().is_some(),
            "not v4(1)'s stream, though held longest"
        );
        assert!(sb.phase().is_some() && ha.phase().is_some());
        drop((sa, sb, ha, hb, n));
    }

    #[tokio::test(start_paused = true)]
    async fn a_young_connection_keeps_its_slot_and_a_busy_holder_owes_one() {
        let s = Slots::new(2, 2);
        let a = s.try_admit(v4(1)).unwrap();
        a.set_phase(Phase::Busy);
        let young = s.try_admit(v4(2)).unwrap();
        young.heard();
        // The newcomer finds a young handshake making progress and an answer under way: it waits.
        let w3 = waiting(&s, v4(3)).await;
        assert!(!w3.is_finished(), "young and busy: nothing taken");
        assert!(young.phase().is_some());
        tokio::time::advance(TENURE).await;
        // Past the tenure, v4(1)'s answer is owed: nothing taken now, its slot after the answer.
        // v4(2)'s handshake is as old: the longest held (v4(1)) gives way first.
        assert!(s.try_admit(v4(3)).is_none());
        a.set_phase(Phase::Idle);
        assert!(a.phase().is_none(), "it gave its slot up after its answer");
        assert!(!a.abrupt(), "its answer is finished");
        // Reserved for v4(3): another newcomer does not get it, it takes v4(2)'s old handshake.
        let d = s.try_admit(v4(4)).expect("room from v4(2)");
        assert!(young.phase().is_none());
        let c = w3.await.unwrap().expect("the slot owed to it");
        d.heard();
        assert!(s.try_admit(v4(5)).is_none(), "both slots young and heard");
        drop((a, young, c, d));
    }

    #[tokio::test(start_paused = true)]
    async fn a_terminal_takes_only_from_one_holding_more() {
        let s = Slots::new(4, 4);
        let a: Vec<Slot> = (0..3).map(|_| s.try_admit(v4(1)).unwrap()).collect();
        let b = s.try_admit(v4(2)).unwrap();
        b.set_phase(Phase::Idle);
        // v4(3) holds none: the biggest holder (v4(1)) gives up its oldest handshake.
        let c = s.try_admit(v4(3)).unwrap();
        assert!(a[0].phase().is_none() && b.phase().is_some());
        // v4(2) holds 1, v4(1) 2: one more for v4(2).
        let b2 = s.try_admit(v4(2)).unwrap();
        assert!(a[1].phase().is_none());
        // Now v4(1) and v4(3) hold 1, v4(2) 2: v4(2) takes from nobody.
        assert!(s.try_admit(v4(2)).is_none());
        drop((a, b, b2, c));
        assert_eq!(s.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trusted_proxy_has_no_share_and_gives_way_at_capacity() {
        let s = Slots::new(6, 1);
        let proxy = Terminal::of_proxy("10.0.0.1".parse().unwrap());
        let held: Vec<Slot> = (0..6).map(|_| s.try_admit(proxy).unwrap()).collect();
        let other = s.try_admit(v4(9)).expect("a direct client still gets in");
        assert_eq!(held.iter().filter(|c| c.phase().is_none()).count(), 1);
        drop((held, other));
    }

    #[test]
    fn a_hello_is_heard_once_its_first_record_is_whole() {
        let fresh = || Hello::Header {
            head: [0; 5],
            got: 0,
        };
        let record = [0x16, 3, 1, 0, 4, 1, 2, 3, 4, 0x17];
        let mut h = fresh();
        assert!(!h.feed(&record[..3]), "three bytes of a header");
        assert!(!h.feed(&record[3..7]));
        assert!(h.feed(&record[7..9]), "the record is whole");
        let mut h = fresh();
        assert!(h.feed(&record), "whole in one read, with more behind it");
        let mut h = fresh();
        assert!(h.feed(&[0x16, 3, 1, 0, 0]), "an empty record is whole");
    }

    /// A body that comes in two reads: nothing yet, then its last byte.
    struct Trickle(u8);

    impl http_body::Body for Trickle {
        type Data = &'static [u8];
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<&'static [u8]>, Self::Error>>> {
            self.0 += 1;
            match self.0 {
                1 => Poll::Pending,
                2 => Poll::Ready(Some(Ok(http_body::Frame::data(&b"x"[..])))),
                _ => Poll::Ready(None),
            }
        }

        fn is_end_stream(&self) -> bool {
            self.0 >= 2
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_busy_and_its_body_arriving_only_while_read() {
        use http_body::Body;
        let s = Slots::new(2, 2);
        let slot = Arc::new(s.try_admit(v4(1)).unwrap());
        let phase = || slot.phase().map(|p| p.0);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        slot.set_phase(Phase::Idle);
        let mut req = Arriving::begin(http::Request::new(Trickle(0)), &slot);
        assert_eq!(phase(), Some(Phase::Busy), "not read yet: being answered");
        let mut body = Pin::new(req.body_mut());
        assert!(body.as_mut().poll_frame(&mut cx).is_pending());
        assert_eq!(phase(), Some(Phase::Body), "read, not all here");
        assert!(matches!(body.poll_frame(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert_eq!(phase(), Some(Phase::Busy), "whole");
        // Whole at the first read, or no body at all: busy throughout.
        for text in ["grant_type=x", ""] {
            slot.set_phase(Phase::Idle);
            let mut req = Arriving::begin(http::Request::new(String::from(text)), &slot);
            assert_eq!(phase(), Some(Phase::Busy));
            let _ = Pin::new(req.body_mut()).poll_frame(&mut cx);
            assert_eq!(phase(), Some(Phase::Busy));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_body_is_never_read_is_not_cut_while_answered() {
        let s = Slots::new(1, 1);
        let slot = Arc::new(s.try_admit(v4(1)).unwrap());
        slot.set_phase(Phase::Idle);
        tokio::time::advance(TENURE).await;
        // A GET sent with a body: its route answers without reading it.
        let get = http::Request::get("/v1/access").body(Trickle(0)).unwrap();
        let _req = Arriving::begin(get, &slot);
        assert!(s.try_admit(v4(2)).is_none(), "its slot is owed, not taken");
        assert!(slot.phase().is_some() && !slot.abrupt());
        slot.set_phase(Phase::Idle);
        assert!(slot.phase().is_none(), "given up after its answer");
        assert!(s.try_admit(v4(2)).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_handler_stops_reading_is_not_cut_while_answered() {
        use http_body::Body;
        let s = Slots::new(1, 1);
        let slot = Arc::new(s.try_admit(v4(1)).unwrap());
        slot.set_phase(Phase::Idle);
        tokio::time::advance(TENURE).await;
        let mut req = Arriving::begin(http::Request::new(Trickle(0)), &slot);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(req.body_mut()).poll_frame(&mut cx).is_pending());
        // Too slow (or too large): the handler gives the body up and answers 400.
        drop(req);
        assert_eq!(slot.phase().map(|p| p.0), Some(Phase::Busy));
        assert!(s.try_admit(v4(2)).is_none(), "its slot is owed, not taken");
        assert!(slot.phase().is_some() && !slot.abrupt());
    }

    /// Spawns a newcomer of `t` that waits for room, and lets it find none. Once admitted, its
    /// ClientHello is read at once (it has been waiting in the socket).
    async fn waiting(s: &Arc<Slots>, t: Terminal) -> tokio::task::JoinHandle<Option<Slot>> {
        let s = s.clone();
        let w = tokio::spawn(async move {
            let slot = s.admit(t).await;
            slot.inspect(Slot::heard)
        });
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        w
    }

    #[tokio::test(start_paused = true)]
    async fn room_goes_to_the_longest_waiting_terminal_not_the_first_to_ask() {
        let s = Slots::new(1, 1);
        let a = s.try_admit(v4(1)).unwrap();
        a.heard();
        // Waiting from 250 ms on (looking again at 350 ms): v4(2) first, then v4(3).
        tokio::time::advance(TENURE - Duration::from_millis(50)).await;
        let w2 = waiting(&s, v4(2)).await;
        let w3 = waiting(&s, v4(3)).await;
        tokio::time::advance(Duration::from_millis(50)).await;
        // a is past its tenure: a newcomer asking now takes it for v4(2), not for itself.
        assert!(s.try_admit(v4(4)).is_none(), "kept for the longest waiting");
        assert!(a.phase().is_none());
        let b = w2.await.unwrap().expect("v4(2) served");
        b.set_phase(Phase::Busy);
        // A slot freed goes to v4(3), next in turn, not to a newcomer asking at once.
        drop(b);
        assert!(s.try_admit(v4(5)).is_none(), "kept for v4(3)");
        let c = w3.await.unwrap().expect("v4(3) served");
        drop((a, c));
        assert_eq!(s.open(), 0);
    }

    /// Attack: a slot owed to a waiting terminal is granted after that terminal gave up waiting
    /// (its park ran out first): the slot is then kept for nobody, and an empty box turns the
    /// next newcomer away for up to [`PARK`].
    #[tokio::test(start_paused = true)]
    async fn a_slot_owed_to_a_terminal_that_left_is_not_kept_for_nobody() {
        let s = Slots::new(1, 1);
        let a = s.try_admit(v4(1)).unwrap();
        a.heard();
        a.set_phase(Phase::Busy);
        // v4(2) waits from 250 ms; at its 350 ms look a is settled and owes it its slot (until
        // 1350 ms), while v4(2) gives up at 1250 ms.
        tokio::time::advance(TENURE - Duration::from_millis(50)).await;
        let w2 = waiting(&s, v4(2)).await;
        for _ in 0..10 {
            tokio::time::advance(RETRY).await;
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        }
        assert!(w2.await.unwrap().is_none(), "v4(2) gave up");
        tokio::time::advance(Duration::from_millis(50)).await;
        // a's answer is written: its slot is owed to v4(2), which is gone.
        a.set_phase(Phase::Idle);
        assert_eq!(s.open(), 0);
        assert!(
            s.try_admit(v4(3)).is_some(),
            "an empty box admits a newcomer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_dropped_while_waiting_leaves_the_queue() {
        let s = Slots::new(1, 1);
        let a = s.try_admit(v4(1)).unwrap();
        a.heard();
        let w2 = waiting(&s, v4(2)).await;
        w2.abort();
        assert!(w2.await.is_err_and(|e| e.is_cancelled()));
        {
            let t = s.lock();
            assert!(t.parked == 0 && t.queue.is_empty(), "nothing left waiting");
        }
        // The slot freed is not kept for the newcomer that is gone: the next one asking has it.
        drop(a);
        let b = s.try_admit(v4(3)).expect("served normally");
        drop(b);
        assert_eq!(s.open(), 0);
    }

    /// Attack: terminals each keeping their share of newcomers waiting filled the waiting room
    /// (eight times `max_connections`) and another terminal's newcomer was closed at once.
    #[tokio::test(start_paused = true)]
    async fn a_full_waiting_room_pushes_out_a_newcomer_of_the_terminal_with_most_waiting() {
        let s = Slots::new(2, 4);
        let held: Vec<Slot> = (0..2).map(|_| s.try_admit(v4(1)).unwrap()).collect();
        held.iter().for_each(Slot::heard);
        // Four terminals, four newcomers waiting each: the room (16) is full.
        let mut w = Vec::new();
        for h in (1..=4).flat_map(|h| [h; 4]) {
            w.push((h, waiting(&s, v4(h)).await));
        }
        let gone = |w: &[(u8, tokio::task::JoinHandle<_>)]| {
            let f = w.iter().filter(|(_, j)| j.is_finished());
            f.map(|(h, _)| *h).collect::<Vec<u8>>()
        };
        assert!(gone(&w).is_empty());
        // A terminal with none waiting: one of the terminal holding most (v4(1)) goes.
        let w9 = waiting(&s, v4(9)).await;
        assert!(!w9.is_finished(), "it waits");
        assert_eq!(gone(&w), [1]);
        // One whose terminal has a newcomer waiting is closed at once.
        assert!(waiting(&s, v4(2)).await.await.unwrap().is_none());
        // A reload: room for 8 (16 waiting), and the next terminal with none waiting pushes out 9,
        // of those with the most waiting first (v4(1), holding most, first among equals): 3, 4,
        // 4, 4 waiting become 1, 2, 2, 1.
        s.configure(1, 4);
        let w10 = waiting(&s, v4(10)).await;
        let mut out = gone(&w);
        out.sort();
        assert_eq!(out, [1, 1, 1, 2, 2, 3, 3, 4, 4, 4]);
        for (_, j) in w {
            if !j.is_finished() {
                j.abort();
            }
        }
        assert!(!w9.is_finished() && !w10.is_finished());
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_terminal_that_may_take_nothing_does_not_hold_up_the_next() {
        let s = Slots::new(2, 2);
        let a = s.try_admit(v4(1)).unwrap();
        let b = s.try_admit(v4(2)).unwrap();
        a.heard();
        b.heard();
        tokio::time::advance(TENURE - Duration::from_millis(50)).await;
        // v4(1) holds as many as anyone: nothing to take for it. v4(3) holds none.
        let w1 = waiting(&s, v4(1)).await;
        let w3 = waiting(&s, v4(3)).await;
        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(s.try_admit(v4(2)).is_none());
        assert!(a.phase().is_none(), "the longest held went, for v4(3)");
        let c = w3.await.unwrap().expect("v4(3) served");
        // Now v4(1) holds none: b, held longest by a terminal holding one, goes for it.
        let d = w1.await.unwrap().expect("v4(1) served");
        assert!(b.phase().is_none() && c.phase().is_some());
        drop((b, c, d));
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
        tokio::time::advance(TENURE).await;
        // Full, each at its share: the biggest holders give way, one slot at a time, to the
        // terminal holding fewer, whatever the age of their connections.
        let fifth = s.try_admit(v4(5)).expect("a fifth terminal gets in");
        assert_eq!(held.iter().filter(|c| c.phase().is_none()).count(), 1);
        fifth.set_phase(Phase::Idle);
        // It holds 1, three others 2: its second connection gets one of theirs.
        let fifth2 = s
            .try_admit(v4(5))
            .expect("a second one from a bigger holder");
        assert_eq!(held.iter().filter(|c| c.phase().is_none()).count(), 2);
        fifth2.set_phase(Phase::Busy);
        // A sixth terminal, holding none, gets one from a holder of 2.
        let sixth = s.try_admit(v4(6)).expect("a sixth terminal gets in");
        assert_eq!(held.iter().filter(|c| c.phase().is_none()).count(), 3);
        for c in held.iter().chain([&fifth, &sixth]) {
            if c.phase().is_some() {
                c.set_phase(Phase::Busy);
            }
        }
        assert!(
            s.try_admit(v4(7)).is_none(),
            "busy connections are never closed to make room"
        );
        drop((held, fifth, fifth2, sixth));
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
        tokio::time::advance(TENURE).await;
        let fifth = s
            .try_admit(v4(5))
            .expect("a terminal holding nothing gets in");
        assert_eq!(held.iter().filter(|c| c.phase().is_none()).count(), 1);
        // Everyone busy, the fifth's handshake included: a sixth has nothing to take.
        fifth.set_phase(Phase::Busy);
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
