//! nl80211 replies → plain structs: stations (signal, rates, standard), interfaces (type,
//! channel) and wiphys (bands, capabilities). Input is the attribute part of one generic netlink
//! message (after `nlmsghdr` and `genlmsghdr`), as the kernel sent it: unknown attributes are
//! skipped, missing or malformed ones leave a field `None`, and nothing here can panic (the lints
//! below forbid indexing, unwrapping and unchecked arithmetic; `fuzz/fuzz_targets/nl80211.rs`
//! and the fixture tests feed it truncated and random bytes).
//!
//! Values from include/uapi/linux/nl80211.h (checked against Debian 12's header).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use super::nla::{attrs, Attr};

pub const CMD_GET_WIPHY: u8 = 1;
pub const CMD_NEW_WIPHY: u8 = 3;
pub const CMD_GET_INTERFACE: u8 = 5;
pub const CMD_NEW_INTERFACE: u8 = 7;
pub const CMD_GET_STATION: u8 = 17;
pub const CMD_NEW_STATION: u8 = 19;

pub const ATTR_WIPHY: u16 = 1;
pub const ATTR_WIPHY_NAME: u16 = 2;
pub const ATTR_IFINDEX: u16 = 3;
pub const ATTR_IFNAME: u16 = 4;
pub const ATTR_IFTYPE: u16 = 5;
pub const ATTR_MAC: u16 = 6;
pub const ATTR_STA_INFO: u16 = 21;
pub const ATTR_WIPHY_BANDS: u16 = 22;
pub const ATTR_WIPHY_FREQ: u16 = 38;
pub const ATTR_SSID: u16 = 52;
pub const ATTR_CHANNEL_WIDTH: u16 = 159;
pub const ATTR_CENTER_FREQ1: u16 = 160;
pub const ATTR_SPLIT_WIPHY_DUMP: u16 = 174;

const STA_INFO_SIGNAL: u16 = 7;
const STA_INFO_TX_BITRATE: u16 = 8;
const STA_INFO_SIGNAL_AVG: u16 = 13;
const STA_INFO_RX_BITRATE: u16 = 14;
const STA_INFO_CONNECTED_TIME: u16 = 16;
const STA_INFO_RX_BYTES64: u16 = 23;
const STA_INFO_TX_BYTES64: u16 = 24;

const RATE_BITRATE: u16 = 1;
const RATE_MCS: u16 = 2;
const RATE_40_MHZ: u16 = 3;
const RATE_SHORT_GI: u16 = 4;
const RATE_BITRATE32: u16 = 5;
const RATE_VHT_MCS: u16 = 6;
const RATE_VHT_NSS: u16 = 7;
const RATE_80_MHZ: u16 = 8;
const RATE_80P80_MHZ: u16 = 9;
const RATE_160_MHZ: u16 = 10;
const RATE_10_MHZ: u16 = 11;
const RATE_5_MHZ: u16 = 12;
const RATE_HE_MCS: u16 = 13;
const RATE_HE_NSS: u16 = 14;
const RATE_HE_GI: u16 = 15;
const RATE_320_MHZ: u16 = 18;
const RATE_EHT_MCS: u16 = 19;
const RATE_EHT_NSS: u16 = 20;

const BAND_ATTR_FREQS: u16 = 1;
const BAND_ATTR_HT_CAPA: u16 = 4;
const BAND_ATTR_VHT_CAPA: u16 = 8;
const BAND_ATTR_IFTYPE_DATA: u16 = 9;
const BAND_IFTYPE_ATTR_HE_CAP_PHY: u16 = 3;
const BAND_IFTYPE_ATTR_EHT_CAP_PHY: u16 = 9;
const FREQ_ATTR_FREQ: u16 = 1;
const FREQ_ATTR_DISABLED: u16 = 2;

fn find<'a>(body: &'a [u8], ty: u16) -> Option<Attr<'a>> {
    attrs(body).find(|a| a.ty == ty)
}

/// PHY family a rate was sent with, from the attributes present in `rate_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phy {
    Legacy,
    Ht,
    Vht,
    He,
    Eht,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateInfo {
    /// NL80211_RATE_INFO_BITRATE32, else NL80211_RATE_INFO_BITRATE (units of 100 kbit/s)
    pub bitrate_100kbps: Option<u32>,
    pub mcs: Option<u8>,
    pub nss: Option<u8>,
    pub phy: Option<Phy>,
    pub width_mhz: Option<u16>,
    pub short_gi: bool,
    pub he_gi: Option<u8>,
}

impl RateInfo {
    pub fn kbps(&self) -> Option<u64> {
        self.bitrate_100kbps
            .map(|v| u64::from(v).saturating_mul(100))
    }
}

pub fn parse_rate_info(body: &[u8]) -> RateInfo {
    let mut r = RateInfo::default();
    let (mut b16, mut b32) = (None, None);
    let (mut ht, mut vht, mut he, mut eht) = (None, None, None, None);
    let mut width = None::<u16>;
    for a in attrs(body) {
        match a.ty {
            RATE_BITRATE => b16 = a.u16(),
            RATE_BITRATE32 => b32 = a.u32(),
            RATE_MCS => ht = a.u8(),
            RATE_VHT_MCS => vht = a.u8(),
            RATE_HE_MCS => he = a.u8(),
            RATE_EHT_MCS => eht = a.u8(),
            RATE_VHT_NSS | RATE_HE_NSS | RATE_EHT_NSS => r.nss = a.u8(),
            RATE_HE_GI => r.he_gi = a.u8(),
            RATE_SHORT_GI => r.short_gi = true,
            RATE_40_MHZ => width = Some(40),
            RATE_80_MHZ => width = Some(80),
            RATE_80P80_MHZ | RATE_160_MHZ => width = Some(160),
            RATE_320_MHZ => width = Some(320),
            RATE_10_MHZ => width = Some(10),
            RATE_5_MHZ => width = Some(5),
            _ => {}
        }
    }
    // the kernel sends BITRATE only when it fits in u16; BITRATE32 always (if nonzero)
    r.bitrate_100kbps = b32.or(b16.map(u32::from)).filter(|&v| v > 0);
    (r.phy, r.mcs) = if let Some(m) = eht {
        (Some(Phy::Eht), Some(m))
    } else if let Some(m) = he {
        (Some(Phy::He), Some(m))
    } else if let Some(m) = vht {
        (Some(Phy::Vht), Some(m))
    } else if let Some(m) = ht {
        // HT MCS index encodes the stream count (0-7: 1, 8-15: 2, ...)
        if r.nss.is_none() && m < 32 {
            r.nss = Some((m / 8).saturating_add(1));
        }
        (Some(Phy::Ht), Some(m))
    } else if r.bitrate_100kbps.is_some() {
        (Some(Phy::Legacy), None)
    } else {
        (None, None)
    };
    if r.phy.is_some() {
        r.width_mhz = Some(width.unwrap_or(20));
    }
    r
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    G2_4,
    G5,
    G6,
    G60,
}

impl Band {
    pub fn from_freq_mhz(f: u32) -> Option<Band> {
        match f {
            2400..=2500 => Some(Band::G2_4),
            // 5 GHz: channels 1-196 incl. 4.9 GHz public safety; 6 GHz starts at 5955 (ch 1), 5935 (ch 2)
            4900..=5930 => Some(Band::G5),
            5931..=7125 => Some(Band::G6),
            57000..=71000 => Some(Band::G60),
            _ => None,
        }
    }
    /// nl80211_band enum index (NL80211_BAND_2GHZ = 0, ...)
    pub fn from_nl80211(i: u16) -> Option<Band> {
        match i {
            0 => Some(Band::G2_4),
            1 => Some(Band::G5),
            2 => Some(Band::G60),
            3 => Some(Band::G6),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Band::G2_4 => "2.4GHz",
            Band::G5 => "5GHz",
            Band::G6 => "6GHz",
            Band::G60 => "60GHz",
        }
    }
}

/// Standard letter for the contract (`n`, `ac`, `ax`, `be`, `a`, `g`, `b`).
/// Legacy rates need the band: 5 GHz → `a`; 2.4 GHz → `b` for the DSSS/CCK
/// rates (1, 2, 5.5, 11 Mbit/s), else `g`.
pub fn standard(rate: &RateInfo, band: Option<Band>) -> Option<&'static str> {
    match rate.phy? {
        Phy::Eht => Some("be"),
        Phy::He => Some("ax"),
        Phy::Vht => Some("ac"),
        Phy::Ht => Some("n"),
        Phy::Legacy => {
            let dsss = matches!(rate.bitrate_100kbps, Some(10 | 20 | 55 | 110));
            match band {
                Some(Band::G5) => Some("a"),
                Some(Band::G2_4) if dsss => Some("b"),
                Some(Band::G2_4) => Some("g"),
                None if dsss => Some("b"),
                _ => None,
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Station {
    pub ifindex: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub signal_dbm: Option<i8>,
    pub signal_avg_dbm: Option<i8>,
    pub tx: Option<RateInfo>,
    pub rx: Option<RateInfo>,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub connected_s: Option<u32>,
}

/// The standards in the order of their generations (`a` and `g` are one generation).
const STANDARDS: [&str; 7] = ["b", "a", "g", "n", "ac", "ax", "be"];

/// The newer of two standards (either may be unknown).
pub fn newer(a: Option<&'static str>, b: Option<&'static str>) -> Option<&'static str> {
    let rank = |s: &str| STANDARDS.iter().position(|x| *x == s);
    match (a, b) {
        (Some(x), Some(y)) => Some(if rank(x) >= rank(y) { x } else { y }),
        (x, y) => x.or(y),
    }
}

/// The oldest standard that can run a channel this wide on this band: 40 MHz needs HT, 80/160
/// VHT on 5 GHz, 320 EHT; 6 GHz has nothing older than HE.
pub fn width_floor(width_mhz: Option<u16>, band: Option<Band>) -> Option<&'static str> {
    match (band?, width_mhz) {
        (Band::G6, Some(320)) => Some("be"),
        (Band::G6, _) => Some("ax"),
        (_, Some(320)) => Some("be"),
        (Band::G5, Some(80 | 160)) => Some("ac"),
        (Band::G2_4 | Band::G5, Some(40 | 80 | 160)) => Some("n"),
        _ => None,
    }
}

/// The channel number of a centre frequency (2.4, 5 and 6 GHz numbering).
pub fn channel(freq_mhz: u32) -> Option<u32> {
    match freq_mhz {
        2484 => Some(14),
        2407..=2483 => Some(freq_mhz.checked_sub(2407)? / 5),
        5935 => Some(2),
        5950..=7125 => Some(freq_mhz.checked_sub(5950)? / 5),
        4900..=5930 => Some(freq_mhz.checked_sub(5000)? / 5),
        _ => None,
    }
}

impl Station {
    /// The newest standard seen in either direction: a station whose last frame in one direction
    /// went at a legacy rate (a management frame) still speaks HT/VHT/HE.
    pub fn standard(&self, band: Option<Band>) -> Option<&'static str> {
        let t = self.tx.as_ref().and_then(|r| standard(r, band));
        let r = self.rx.as_ref().and_then(|r| standard(r, band));
        newer(t, r)
    }
}

/// Body of one NL80211_CMD_NEW_STATION message → `Station` (None if it has no STA_INFO or MAC).
pub fn parse_station(body: &[u8]) -> Option<Station> {
    let mut s = Station::default();
    let mut info = None;
    for a in attrs(body) {
        match a.ty {
            ATTR_IFINDEX => s.ifindex = a.u32(),
            ATTR_MAC => s.mac = a.mac(),
            ATTR_STA_INFO => info = Some(a),
            _ => {}
        }
    }
    s.mac?;
    for a in info?.nested() {
        match a.ty {
            STA_INFO_SIGNAL => s.signal_dbm = a.i8(),
            STA_INFO_SIGNAL_AVG => s.signal_avg_dbm = a.i8(),
            STA_INFO_TX_BITRATE => s.tx = Some(parse_rate_info(a.data)).filter(|r| r.phy.is_some()),
            STA_INFO_RX_BITRATE => s.rx = Some(parse_rate_info(a.data)).filter(|r| r.phy.is_some()),
            STA_INFO_RX_BYTES64 => s.rx_bytes = a.u64(),
            STA_INFO_TX_BYTES64 => s.tx_bytes = a.u64(),
            STA_INFO_CONNECTED_TIME => s.connected_s = a.u32(),
            _ => {}
        }
    }
    // a signal of 0 dBm is what drivers without signal reporting leave in place
    if s.signal_dbm == Some(0) {
        s.signal_dbm = None;
    }
    Some(s)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub ifindex: Option<u32>,
    pub name: Option<String>,
    pub wiphy: Option<u32>,
    pub iftype: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub ssid: Option<String>,
    pub freq_mhz: Option<u32>,
    pub center_freq1_mhz: Option<u32>,
    /// nl80211_chan_width converted to MHz (20 for 20_NOHT and 20)
    pub width_mhz: Option<u16>,
}

impl Interface {
    pub fn band(&self) -> Option<Band> {
        self.freq_mhz.and_then(Band::from_freq_mhz)
    }
    /// Whether stations associate with this interface (AP, AP VLAN, P2P group owner, mesh).
    pub fn serves_stations(&self) -> bool {
        matches!(self.iftype, Some(3 | 4 | 7 | 9))
    }

    pub fn iftype_str(&self) -> &'static str {
        match self.iftype {
            Some(1) => "adhoc",
            Some(2) => "station",
            Some(3) => "ap",
            Some(4) => "ap_vlan",
            Some(6) => "monitor",
            Some(7) => "mesh",
            Some(8) => "p2p_client",
            Some(9) => "p2p_go",
            Some(10) => "p2p_device",
            _ => "other",
        }
    }
}

pub fn chan_width_mhz(w: u32) -> Option<u16> {
    match w {
        0 | 1 => Some(20),
        2 => Some(40),
        3 => Some(80),
        4 | 5 => Some(160),
        6 => Some(5),
        7 => Some(10),
        13 => Some(320),
        _ => None,
    }
}

/// Body of one NL80211_CMD_NEW_INTERFACE message (None without IFINDEX).
pub fn parse_interface(body: &[u8]) -> Option<Interface> {
    let mut i = Interface::default();
    for a in attrs(body) {
        match a.ty {
            ATTR_IFINDEX => i.ifindex = a.u32(),
            ATTR_IFNAME => i.name = a.str().map(str::to_owned),
            ATTR_WIPHY => i.wiphy = a.u32(),
            ATTR_IFTYPE => i.iftype = a.u32(),
            ATTR_MAC => i.mac = a.mac(),
            ATTR_SSID => i.ssid = core::str::from_utf8(a.data).ok().map(str::to_owned),
            ATTR_WIPHY_FREQ => i.freq_mhz = a.u32(),
            ATTR_CENTER_FREQ1 => i.center_freq1_mhz = a.u32(),
            ATTR_CHANNEL_WIDTH => i.width_mhz = a.u32().and_then(chan_width_mhz),
            _ => {}
        }
    }
    i.ifindex?;
    Some(i)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandInfo {
    pub band: Band,
    /// enabled (not disabled by regulatory) channel centre frequencies, MHz
    pub freqs: Vec<u32>,
    pub ht: bool,
    pub vht: bool,
    pub he: bool,
    pub eht: bool,
}

impl BandInfo {
    /// Newest standard the radio supports on this band.
    pub fn standard(&self) -> &'static str {
        match (self.eht, self.he, self.vht, self.ht, self.band) {
            (true, ..) => "be",
            (_, true, ..) => "ax",
            (_, _, true, ..) => "ac",
            (_, _, _, true, _) => "n",
            (.., Band::G5) => "a",
            _ => "g",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wiphy {
    pub index: Option<u32>,
    pub name: Option<String>,
    pub bands: Vec<BandInfo>,
}

/// Folds one NL80211_CMD_NEW_WIPHY message into `out`. With a split dump
/// (NL80211_ATTR_SPLIT_WIPHY_DUMP) one wiphy spans several messages and even
/// one band's frequencies are spread over several; they are merged by wiphy
/// index and band.
pub fn merge_wiphy(out: &mut Vec<Wiphy>, body: &[u8]) -> Option<()> {
    let idx = find(body, ATTR_WIPHY)?.u32()?;
    let pos = match out.iter().position(|w| w.index == Some(idx)) {
        Some(p) => p,
        None => {
            if out.len() >= 64 {
                return None;
            }
            out.push(Wiphy {
                index: Some(idx),
                ..Wiphy::default()
            });
            out.len().saturating_sub(1)
        }
    };
    let w = out.get_mut(pos)?;
    for a in attrs(body) {
        match a.ty {
            ATTR_WIPHY_NAME => w.name = a.str().map(str::to_owned),
            ATTR_WIPHY_BANDS => {
                for b in a.nested() {
                    let Some(band) = Band::from_nl80211(b.ty) else {
                        continue;
                    };
                    let bi = match w.bands.iter().position(|x| x.band == band) {
                        Some(p) => p,
                        None if w.bands.len() >= 8 => continue,
                        None => {
                            w.bands.push(BandInfo {
                                band,
                                freqs: Vec::new(),
                                ht: false,
                                vht: false,
                                he: false,
                                eht: false,
                            });
                            w.bands.len().saturating_sub(1)
                        }
                    };
                    let Some(info) = w.bands.get_mut(bi) else {
                        continue;
                    };
                    for ba in b.nested() {
                        match ba.ty {
                            BAND_ATTR_HT_CAPA => info.ht = true,
                            BAND_ATTR_VHT_CAPA => info.vht = true,
                            BAND_ATTR_IFTYPE_DATA => {
                                for it in ba.nested() {
                                    for ita in it.nested() {
                                        match ita.ty {
                                            BAND_IFTYPE_ATTR_HE_CAP_PHY => info.he = true,
                                            BAND_IFTYPE_ATTR_EHT_CAP_PHY => info.eht = true,
                                            _ => {}
                                        }
                                    }
                                }
                            }
                            BAND_ATTR_FREQS => {
                                for f in ba.nested() {
                                    let mut freq = None;
                                    let mut disabled = false;
                                    for fa in f.nested() {
                                        match fa.ty {
                                            FREQ_ATTR_FREQ => freq = fa.u32(),
                                            FREQ_ATTR_DISABLED => disabled = true,
                                            _ => {}
                                        }
                                    }
                                    if let Some(fr) = freq.filter(|_| !disabled) {
                                        if !info.freqs.contains(&fr) && info.freqs.len() < 1024 {
                                            info.freqs.push(fr);
                                        }
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Some(())
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(17);
    for (i, b) in m.iter().enumerate() {
        let _ = write!(s, "{}{b:02x}", if i > 0 { ":" } else { "" });
    }
    s
}

/// CTRL_CMD_NEWFAMILY reply body → CTRL_ATTR_FAMILY_ID.
pub fn ctrl_family_id(body: &[u8]) -> Option<u16> {
    attrs(body).find(|a| a.ty == 1).and_then(|a| a.u16())
}
