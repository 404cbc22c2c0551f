//! Wi-Fi as the kernel sees it (nl80211, generic netlink): the box's radios and, for each
//! associated station, its signal, rates and standard.
//!
//! Off the request path: a thread of its own refreshes a view every second while the API is in
//! use (a card read in the last minute) and every 10 s otherwise; requests only read the last
//! view, so their latency never depends on a netlink round trip. The netlink exchanges are
//! blocking calls on that thread, each receive bounded by a socket timeout, each exchange and
//! each refresh by a deadline, each dump by a message/byte cap. A kernel without nl80211 (no
//! cfg80211, qemu-user) is logged once, when the box has wireless interfaces at all, and looked
//! for again every minute.
//!
//! Also here: the per-station provider output (a JSON map MAC → `client.wifi` object) for vendor
//! stacks without nl80211, checked member by member.
use super::nl80211::{self, Band, Interface, Station, Wiphy};
use super::nla::{self, put_attr};
use boxapi_core::log;
use nix::sys::socket::{recv, send, MsgFlags, SockProtocol};
use serde_json::{json, Map, Value};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Refresh period while a tool reads the card, and otherwise.
const BUSY_PERIOD: Duration = Duration::from_secs(1);
const IDLE_PERIOD: Duration = Duration::from_secs(10);
/// How long after the last card read the API counts as in use.
const IN_USE: Duration = Duration::from_secs(60);
/// A view older than this wakes the refresher when a request reads it.
const STALE: Duration = Duration::from_millis(1500);
/// Without nl80211 (or after an error), how long before trying again.
const RETRY: Duration = Duration::from_secs(60);
/// Wiphy capabilities change with the hardware, not between two refreshes.
const WIPHY_TTL: Duration = Duration::from_secs(30);
/// Each receive, and each whole exchange.
const RECV_TIMEOUT: Duration = Duration::from_millis(500);
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(2);
/// A whole refresh: past it, the interfaces not dumped yet wait for the next one.
const REFRESH_DEADLINE: Duration = Duration::from_secs(5);
/// Bounds on what one dump may bring (a split wiphy dump of a 4-band radio is ~60 KB).
const RECV_BUF: usize = 64 * 1024;
const MAX_MESSAGES: usize = 4096;
const MAX_BYTES: usize = 4 << 20;
/// A box has a handful of AP interfaces and at most a few hundred stations.
const MAX_INTERFACES: usize = 32;
const MAX_STATIONS: usize = 1024;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const ENOENT: i32 = 2;

/// The members of `client.wifi`: the contract's five, then the extras.
pub const CLIENT_WIFI: [&str; 8] = [
    "band",
    "standard",
    "signal_dbm",
    "tx_kbps",
    "rx_kbps",
    "channel",
    "frequency_mhz",
    "channel_width_mhz",
];

/// `client.wifi` with every member unknown.
pub fn unknown_client_wifi() -> Value {
    Value::Object(
        CLIENT_WIFI
            .iter()
            .map(|k| ((*k).into(), Value::Null))
            .collect(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum WifiError {
    #[error("netlink socket: {0}")]
    Socket(nix::errno::Errno),
    #[error("the kernel refused an nl80211 request: {0}")]
    Kernel(nix::errno::Errno),
    #[error("no nl80211 in this kernel (cfg80211 not loaded)")]
    NoFamily,
    #[error("no complete answer within {0} ms")]
    Timeout(u128),
    #[error("the answer is larger than the reader accepts")]
    TooBig,
}

impl From<nix::errno::Errno> for WifiError {
    fn from(e: nix::errno::Errno) -> Self {
        if e == nix::errno::Errno::EAGAIN {
            WifiError::Timeout(RECV_TIMEOUT.as_millis())
        } else {
            WifiError::Socket(e)
        }
    }
}

impl WifiError {
    /// Errors that will not go away by asking again in a second.
    fn is_lasting(&self) -> bool {
        use nix::errno::Errno;
        matches!(
            self,
            WifiError::NoFamily
                | WifiError::Socket(Errno::EPROTONOSUPPORT | Errno::EAFNOSUPPORT | Errno::EPERM)
        )
    }
}

/// A generic netlink socket talking to nl80211. Blocking: used on the refresher's thread only.
struct Socket {
    fd: OwnedFd,
    family: u16,
    seq: u32,
    /// Messages in the last exchange whose lengths lied (logged by the caller).
    malformed: usize,
    /// The end of the refresh in progress: no exchange runs past it.
    until: Option<Instant>,
}

impl Socket {
    fn open() -> Result<Socket, WifiError> {
        let fd = nla::kernel_socket(SockProtocol::NetlinkGeneric, RECV_TIMEOUT)?;
        let mut s = Socket {
            fd,
            family: 0,
            seq: 0,
            malformed: 0,
            until: None,
        };
        let mut name = Vec::new();
        put_attr(&mut name, CTRL_ATTR_FAMILY_NAME, b"nl80211\0");
        let mut id = None;
        let r = s.exchange(
            GENL_ID_CTRL,
            nla::NLM_F_REQUEST | nla::NLM_F_ACK,
            CTRL_CMD_GETFAMILY,
            &name,
            &mut |body| id = id.or(nl80211::ctrl_family_id(body)),
        );
        match r {
            Err(WifiError::Kernel(e)) if e as i32 == ENOENT => return Err(WifiError::NoFamily),
            r => r?,
        }
        s.family = id.ok_or(WifiError::NoFamily)?;
        Ok(s)
    }

    /// Sends one request and feeds the attributes of every reply message of `family` to `each`,
    /// until the dump's end, the acknowledgement or an error.
    fn exchange(
        &mut self,
        family: u16,
        flags: u16,
        cmd: u8,
        attrs: &[u8],
        each: &mut dyn FnMut(&[u8]),
    ) -> Result<(), WifiError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut body = vec![cmd, 1, 0, 0]; // genlmsghdr: command, version 1
        body.extend_from_slice(attrs);
        send(
            self.fd.as_raw_fd(),
            &nla::request(family, flags, seq, &body),
            MsgFlags::empty(),
        )?;
        let mut deadline = Instant::now() + EXCHANGE_DEADLINE;
        if let Some(until) = self.until {
            deadline = deadline.min(until);
        }
        let mut buf = vec![0u8; RECV_BUF];
        let (mut count, mut bytes) = (0usize, 0usize);
        let dump = flags & nla::NLM_F_DUMP == nla::NLM_F_DUMP;
        loop {
            if Instant::now() > deadline {
                return Err(WifiError::Timeout(EXCHANGE_DEADLINE.as_millis()));
            }
            // MSG_TRUNC: the kernel says how long the message really was, so a truncated read
            // is noticed instead of parsed.
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC)?;
            let data = buf.get(..n).ok_or(WifiError::TooBig)?;
            bytes = bytes.saturating_add(n);
            let mut msgs = nla::messages(data);
            for m in msgs.by_ref() {
                if m.seq != seq {
                    continue; // a late answer to an earlier request that timed out
                }
                count = count.saturating_add(1);
                if count > MAX_MESSAGES || bytes > MAX_BYTES {
                    return Err(WifiError::TooBig);
                }
                match m.ty {
                    nla::NLMSG_DONE => return Ok(()),
                    nla::NLMSG_OVERRUN => return Err(WifiError::TooBig),
                    nla::NLMSG_ERROR => {
                        return match m.error_code() {
                            Some(0) => Ok(()),
                            Some(e) => Err(WifiError::Kernel(nix::errno::Errno::from_raw(
                                e.checked_neg().unwrap_or(0),
                            ))),
                            None => Err(WifiError::Kernel(nix::errno::Errno::UnknownErrno)),
                        }
                    }
                    t if t == family => {
                        if let Some((_, attrs)) = m.genl() {
                            each(attrs);
                        }
                        if !dump && flags & nla::NLM_F_ACK == 0 {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
            if msgs.malformed() {
                self.malformed = self.malformed.saturating_add(1);
            }
        }
    }

    fn dump(
        &mut self,
        cmd: u8,
        attrs: &[u8],
        each: &mut dyn FnMut(&[u8]),
    ) -> Result<(), WifiError> {
        let family = self.family;
        self.exchange(
            family,
            nla::NLM_F_REQUEST | nla::NLM_F_DUMP,
            cmd,
            attrs,
            each,
        )
    }

    fn interfaces(&mut self) -> Result<Vec<Interface>, WifiError> {
        let mut out = Vec::new();
        self.dump(nl80211::CMD_GET_INTERFACE, &[], &mut |b| {
            if out.len() < MAX_INTERFACES {
                out.extend(nl80211::parse_interface(b));
            }
        })?;
        Ok(out)
    }

    fn stations(&mut self, ifindex: u32, out: &mut Vec<(u32, Station)>) -> Result<(), WifiError> {
        let mut a = Vec::new();
        put_attr(&mut a, nl80211::ATTR_IFINDEX, &ifindex.to_ne_bytes());
        self.dump(nl80211::CMD_GET_STATION, &a, &mut |b| {
            if out.len() < MAX_STATIONS {
                out.extend(nl80211::parse_station(b).map(|s| (ifindex, s)));
            }
        })
    }

    /// The split dump: one wiphy spans several messages (needed for HE/EHT and 6 GHz data).
    fn wiphys(&mut self) -> Result<Vec<Wiphy>, WifiError> {
        let mut a = Vec::new();
        put_attr(&mut a, nl80211::ATTR_SPLIT_WIPHY_DUMP, &[]);
        let mut out = Vec::new();
        self.dump(nl80211::CMD_GET_WIPHY, &a, &mut |b| {
            let _ = nl80211::merge_wiphy(&mut out, b);
        })?;
        Ok(out)
    }
}

/// What one refresh read.
#[derive(Debug, Default)]
pub struct Reading {
    pub interfaces: Vec<Interface>,
    /// Stations with the index of the interface they are associated with.
    pub stations: Vec<(u32, Station)>,
    pub wiphys: Vec<Wiphy>,
}

/// The last refresh, as the request path reads it.
#[derive(Debug, Default)]
pub struct View {
    /// When nl80211 was last asked (whatever it answered).
    pub read_at: Option<Instant>,
    /// Set after a lasting failure (no nl80211 in this kernel): not worth asking before then.
    pub retry_at: Option<Instant>,
    /// The system layer's `wifi` section from nl80211 (`None`: nl80211 gave nothing).
    pub layer: Option<Arc<Value>>,
    /// `client.wifi` objects by station MAC address (a few dozen: a list is enough).
    pub stations: Vec<([u8; 6], Value)>,
}

/// The operating frequency and width of the interfaces of one wiphy (an AP VLAN has none of
/// its own: it shares its radio's channel).
fn channel_of<'a>(ifaces: &'a [Interface], iface: &'a Interface) -> Option<&'a Interface> {
    if iface.freq_mhz.is_some() {
        return Some(iface);
    }
    ifaces
        .iter()
        .find(|i| i.wiphy.is_some() && i.wiphy == iface.wiphy && i.freq_mhz.is_some())
}

/// `client.wifi` for one station, from the terminal's point of view (as `client` counters are):
/// `tx_kbps` is the rate the terminal last sent at (the box's receive rate from it), `rx_kbps`
/// the rate the box last sent to it at.
pub fn client_wifi(st: &Station, chan: Option<&Interface>) -> Value {
    let band = chan.and_then(Interface::band);
    let freq = chan.and_then(|c| c.freq_mhz);
    json!({
        "band": band.map(Band::as_str),
        "standard": st.standard(band),
        "signal_dbm": st.signal_dbm.or(st.signal_avg_dbm),
        "tx_kbps": st.rx.as_ref().and_then(nl80211::RateInfo::kbps),
        "rx_kbps": st.tx.as_ref().and_then(nl80211::RateInfo::kbps),
        "channel": freq.and_then(nl80211::channel),
        "frequency_mhz": freq,
        "channel_width_mhz": chan.and_then(|c| c.width_mhz),
    })
}

/// Builds the view: one radio per wiphy, and each station's `client.wifi`.
///
/// A radio's `standard` is the newest standard among its associated stations, raised to what
/// its channel width implies (an 80 MHz 5 GHz channel is at least `ac`); with no station, the
/// newest its hardware supports on its band (nl80211 wiphy capabilities). Which of its
/// capabilities hostapd actually enabled is not in nl80211: an operator who knows it states it in
/// `[metrics.static]` or a provider, whose `wifi.radios` replace these.
pub fn view(r: &Reading, read_at: Instant) -> View {
    let serving: Vec<&Interface> = r
        .interfaces
        .iter()
        .filter(|i| i.serves_stations())
        .collect();
    let mut stations: Vec<([u8; 6], Value)> = Vec::new();
    // The newest standard seen among each wiphy's stations.
    let mut best: Vec<(u32, &'static str)> = Vec::new();
    for (ifindex, st) in &r.stations {
        let Some(mac) = st.mac else { continue };
        let iface = r.interfaces.iter().find(|i| i.ifindex == Some(*ifindex));
        let chan = iface.and_then(|i| channel_of(&r.interfaces, i));
        let seen = st.standard(chan.and_then(Interface::band));
        if let (Some(w), Some(seen)) = (iface.and_then(|i| i.wiphy), seen) {
            match best.iter_mut().find(|(x, _)| *x == w) {
                Some((_, b)) => *b = nl80211::newer(Some(*b), Some(seen)).unwrap_or(seen),
                None => best.push((w, seen)),
            }
        }
        if !stations.iter().any(|(m, _)| *m == mac) {
            stations.push((mac, client_wifi(st, chan)));
        }
    }
    let mut indices: Vec<u32> = r
        .wiphys
        .iter()
        .filter_map(|w| w.index)
        .chain(r.interfaces.iter().filter_map(|i| i.wiphy))
        .collect();
    indices.sort_unstable();
    indices.dedup();
    let radios: Vec<Value> = indices
        .iter()
        .map(|idx| {
            let wiphy = r.wiphys.iter().find(|w| w.index == Some(*idx));
            let op = serving
                .iter()
                .find(|i| i.wiphy == Some(*idx) && i.freq_mhz.is_some())
                .copied();
            // Not operating: the band is still known when the radio has only one.
            let usable: Vec<Band> = wiphy
                .map(|w| {
                    w.bands
                        .iter()
                        .filter(|b| !b.freqs.is_empty())
                        .map(|b| b.band)
                        .collect()
                })
                .unwrap_or_default();
            let band = op.and_then(Interface::band).or(if usable.len() == 1 {
                usable.first().copied()
            } else {
                None
            });
            let capability = wiphy
                .and_then(|w| w.bands.iter().find(|b| Some(b.band) == band))
                .map(nl80211::BandInfo::standard);
            let floor = nl80211::width_floor(op.and_then(|i| i.width_mhz), band);
            let seen = best.iter().find(|(w, _)| w == idx).map(|(_, s)| *s);
            let standard = match seen {
                Some(seen) => nl80211::newer(Some(seen), floor),
                None => capability.or(floor),
            };
            let freq = op.and_then(|i| i.freq_mhz);
            json!({
                "band": band.map(Band::as_str),
                "enabled": op.is_some(),
                "standard": standard,
                "channel": freq.and_then(nl80211::channel),
                "frequency_mhz": freq,
                "channel_width_mhz": op.and_then(|i| i.width_mhz),
            })
        })
        .collect();
    let layer = (!radios.is_empty()).then(|| {
        let enabled = radios.iter().any(|r| r["enabled"] == true);
        Arc::new(json!({ "wifi": { "enabled": enabled, "radios": radios } }))
    });
    View {
        read_at: Some(read_at),
        retry_at: None,
        layer,
        stations,
    }
}

/// The refresher's state between two refreshes.
#[derive(Default)]
struct Reader {
    socket: Option<Socket>,
    wiphys: Vec<Wiphy>,
    wiphys_at: Option<Instant>,
    /// The last error logged, so that a lasting condition is logged once.
    logged: Option<String>,
    /// When to try again after a lasting error.
    retry_at: Option<Instant>,
    /// The last refresh's refused station dump, if any (interface name, errno), for the log.
    refused: Option<(Option<String>, nix::errno::Errno)>,
}

impl Reader {
    /// One refresh: interfaces, the stations of every interface that serves stations, and the
    /// wiphys when due. Blocking.
    fn read(&mut self) -> Result<Reading, WifiError> {
        let until = Instant::now() + REFRESH_DEADLINE;
        let socket = match self.socket.take() {
            Some(s) => s,
            None => Socket::open()?,
        };
        let socket = self.socket.insert(socket);
        socket.malformed = 0;
        socket.until = Some(until);
        let interfaces = socket.interfaces()?;
        let mut stations = Vec::new();
        self.refused = None;
        for i in interfaces.iter().filter(|i| i.serves_stations()) {
            if Instant::now() > until {
                break;
            }
            if let Some(ix) = i.ifindex {
                match socket.stations(ix, &mut stations) {
                    // One interface's refusal (a driver without station dumps, an interface
                    // removed since the interface dump) costs that interface's stations, not
                    // the radios and every other station: the kernel ended that dump cleanly.
                    Err(WifiError::Kernel(e)) => self.refused = Some((i.name.clone(), e)),
                    r => r?,
                }
            }
        }
        let known = |w: &Option<u32>| self.wiphys.iter().any(|x| x.index == *w);
        let new_wiphy = interfaces
            .iter()
            .any(|i| i.wiphy.is_some() && !known(&i.wiphy));
        let due = new_wiphy || self.wiphys_at.is_none_or(|at| at.elapsed() > WIPHY_TTL);
        if due && Instant::now() < until {
            self.wiphys = socket.wiphys()?;
            self.wiphys_at = Some(Instant::now());
        }
        Ok(Reading {
            interfaces,
            stations,
            wiphys: self.wiphys.clone(),
        })
    }
}

/// Whether this system has wireless interfaces at all (sysfs): without any, a kernel without
/// nl80211 is expected and not worth a log line.
fn has_wireless_interfaces() -> bool {
    std::fs::read_dir("/sys/class/net").is_ok_and(|dir| {
        dir.flatten().any(|e| {
            let p = e.path();
            p.join("phy80211").exists() || p.join("wireless").exists()
        })
    })
}

/// The shared Wi-Fi view and its refresher.
pub struct Wifi {
    view: RwLock<Arc<View>>,
    reader: Mutex<Reader>,
    /// The last time a request read the view.
    used: Mutex<Option<Instant>>,
    /// Set (and signalled) when a request found the view stale.
    wake: (Mutex<bool>, Condvar),
}

impl Default for Wifi {
    fn default() -> Self {
        Wifi {
            view: RwLock::new(Arc::new(View::default())),
            reader: Mutex::default(),
            used: Mutex::new(None),
            wake: (Mutex::new(false), Condvar::new()),
        }
    }
}

impl Wifi {
    fn current(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Marks the view as in use; wakes the refresher when it is stale.
    fn touch(&self, view: &View) {
        *self.used.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let stale = view.read_at.is_none_or(|at| at.elapsed() > STALE)
            && view.retry_at.is_none_or(|at| Instant::now() >= at);
        if stale {
            // One wake-up per refresh, not one per request (each is a futex call).
            let mut asked = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
            if !*asked {
                *asked = true;
                self.wake.1.notify_one();
            }
        }
    }

    /// The system layer's `wifi` section from nl80211, if it answered.
    pub fn layer(&self) -> Option<Arc<Value>> {
        let v = self.current();
        self.touch(&v);
        v.layer.clone()
    }

    /// `client.wifi` of the station with this MAC address, if nl80211 knows it.
    pub fn station(&self, mac: &[u8; 6]) -> Option<Value> {
        let v = self.current();
        self.touch(&v);
        v.stations
            .iter()
            .find(|(m, _)| m == mac)
            .map(|(_, w)| w.clone())
    }

    /// Refreshes the view now (blocking: at start-up, then on the refresher's thread); returns
    /// how long to wait before the next refresh.
    pub fn refresh(&self) -> Duration {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.retry_at.is_some_and(|at| Instant::now() < at) {
            // Nothing is published: the flag is cleared here too, or the refresher would spin.
            *self.wake.0.lock().unwrap_or_else(|p| p.into_inner()) = false;
            return RETRY;
        }
        let result = reader.read();
        let malformed = reader.socket.as_ref().map_or(0, |s| s.malformed);
        let refused = reader.refused.take();
        let (view, error) = match result {
            Ok(reading) => (view(&reading, Instant::now()), None),
            Err(e) => {
                // Start again from a fresh socket: a half-read dump must not feed the next one.
                reader.socket = None;
                reader.retry_at = e.is_lasting().then(|| Instant::now() + RETRY);
                let failed = View {
                    read_at: Some(Instant::now()),
                    retry_at: reader.retry_at,
                    ..View::default()
                };
                (failed, Some(e))
            }
        };
        let status = match (&error, malformed, refused) {
            (Some(e), ..) => Some(e.to_string()),
            (None, 0, None) => None,
            (None, 0, Some((name, e))) => Some(format!(
                "station dump of {} refused: {e} (its stations are left out)",
                name.as_deref().unwrap_or("an interface")
            )),
            (None, n, _) => Some(format!(
                "{n} nl80211 replies with malformed messages (skipped)"
            )),
        };
        if status != reader.logged {
            match &status {
                Some(s) if error.is_none() || has_wireless_interfaces() => {
                    log::event("wifi_error", &[("source", "nl80211"), ("error", s)]);
                }
                None if reader.logged.is_some() => {
                    log::event("wifi_ok", &[("source", "nl80211")]);
                }
                _ => {}
            }
            reader.logged = status;
        }
        let lasting = error.as_ref().is_some_and(WifiError::is_lasting);
        drop(reader);
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
        // Cleared now, not when the refresher woke: a request that found the old view stale
        // while this refresh ran asked for what it now has, not for another refresh at once.
        *self.wake.0.lock().unwrap_or_else(|p| p.into_inner()) = false;
        let used = *self.used.lock().unwrap_or_else(|p| p.into_inner());
        match used {
            _ if lasting => RETRY,
            Some(at) if at.elapsed() < IN_USE => BUSY_PERIOD,
            _ => IDLE_PERIOD,
        }
    }

    /// Starts the refresher: a thread of its own for the daemon's lifetime (netlink calls block;
    /// they never run on the runtime's thread). A failure to start it is logged: the card then
    /// has the first refresh's view.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        let started = std::thread::Builder::new()
            .name("wifi".into())
            // Small: the receive buffer is on the heap and the parser does not recurse.
            .stack_size(128 * 1024)
            .spawn(move || loop {
                let next = me.refresh();
                me.sleep(next);
            });
        if let Err(e) = started {
            log::event(
                "wifi_error",
                &[("error", &format!("no refresher thread: {e}"))],
            );
        }
    }

    /// Waits `d`, or less when a request found the view stale (the flag stays set until the
    /// next view is published, so that requests meanwhile do not signal again).
    fn sleep(&self, d: Duration) {
        let woken = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.wake.1.wait_timeout_while(woken, d, |w| !*w);
    }
}

/// Largest accepted values in a station provider's entries.
const MAX_KBPS: u64 = 1 << 40;

/// Parses a station provider's output: a JSON object whose keys are MAC addresses and whose
/// values are (partial) `client.wifi` objects. Bad entries and members are dropped, each named
/// in the returned problems; the result is keyed by lower-case colon-separated MAC addresses.
pub fn parse_stations(bytes: &[u8]) -> Result<(Map<String, Value>, Vec<String>), String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(entries) = v else {
        return Err("expected a JSON object mapping MAC addresses to client.wifi objects".into());
    };
    let mut out = Map::new();
    let mut problems = Vec::new();
    for (key, entry) in entries {
        if out.len() >= MAX_STATIONS {
            problems.push(format!(
                "more than {MAX_STATIONS} stations: the rest are ignored"
            ));
            break;
        }
        let Some(mac) = parse_mac(&key) else {
            problems.push(format!("{key:.40?}: not a MAC address"));
            continue;
        };
        let mac_key = nl80211::fmt_mac(&mac);
        if out.contains_key(&mac_key) {
            // The same station spelt twice ("AA-BB-…" and "aa:bb:…"): which one the provider
            // meant is unknown; the first is kept and the operator told.
            problems.push(format!("{key}: the same MAC as another entry; ignored"));
            continue;
        }
        let Value::Object(members) = entry else {
            problems.push(format!("{key}: expected an object"));
            continue;
        };
        let mut w = Map::new();
        for (name, value) in members {
            match check_member(&name, &value) {
                Ok(()) => {
                    w.insert(name, value);
                }
                Err(why) => problems.push(format!("{key}.{name:.40}: {why}")),
            }
        }
        out.insert(mac_key, Value::Object(w));
    }
    Ok((out, problems))
}

fn check_member(name: &str, v: &Value) -> Result<(), &'static str> {
    if v.is_null() {
        return Ok(());
    }
    let int_in = |lo: i64, hi: i64| v.as_i64().is_some_and(|n| (lo..=hi).contains(&n));
    let ok = match name {
        "band" => matches!(v.as_str(), Some("2.4GHz" | "5GHz" | "6GHz" | "60GHz")),
        "standard" => matches!(v.as_str(), Some("a" | "b" | "g" | "n" | "ac" | "ax" | "be")),
        "signal_dbm" => int_in(-150, 30),
        "tx_kbps" | "rx_kbps" => v.as_u64().is_some_and(|n| n <= MAX_KBPS),
        "channel" => int_in(1, 255),
        "frequency_mhz" => int_in(1, 100_000),
        "channel_width_mhz" => matches!(v.as_u64(), Some(5 | 10 | 20 | 40 | 80 | 160 | 320)),
        _ => return Err("unknown member"),
    };
    if ok {
        Ok(())
    } else {
        Err(match name {
            "band" => "expected 2.4GHz, 5GHz, 6GHz, 60GHz or null",
            "standard" => "expected a, b, g, n, ac, ax, be or null",
            "signal_dbm" => "expected an integer dBm from -150 to 30 or null",
            "channel_width_mhz" => "expected 5, 10, 20, 40, 80, 160, 320 or null",
            _ => "expected a non-negative integer in range or null",
        })
    }
}

/// `aa:bb:cc:dd:ee:ff` or `AA-BB-CC-DD-EE-FF`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in &mut mac {
        let p = parts.next()?;
        // Two hex digits exactly (from_str_radix alone would take "+2").
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(w: &Wifi) -> bool {
        *w.wake.0.lock().unwrap()
    }

    #[test]
    fn a_refresh_answers_the_wake_ups_asked_while_it_ran() {
        // Whatever this machine's kernel answers (nl80211, none, or an error), a refresh ends
        // with no wake-up pending: a request that asked during it is served by its view.
        let w = Wifi::default();
        *w.wake.0.lock().unwrap() = true;
        w.refresh();
        assert!(!asked(&w));
        assert!(w.current().read_at.is_some());
        // The view is fresh: reading it asks for nothing.
        w.layer();
        assert!(!asked(&w));
        // Again, whether this refresh reads or waits out a lasting failure.
        *w.wake.0.lock().unwrap() = true;
        w.refresh();
        assert!(!asked(&w));
    }

    #[test]
    fn a_stale_view_asks_once() {
        let w = Wifi::default();
        // No refresh yet: the view is stale.
        assert!(w.layer().is_none());
        assert!(asked(&w));
        assert!(w.station(&[0; 6]).is_none());
        assert!(asked(&w));
    }
}
