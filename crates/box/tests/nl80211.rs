//! The nl80211 parser (`boxapi::card::nl80211`) on bytes it did not write: replies the kernel
//! sent to `iw` (captured with strace in the mac80211_hwsim VM, fixtures/nl80211/*.hex) and
//! messages encoded by pyroute2 (fixtures/nl80211/pyroute2_*.hex), compared with what `iw`
//! printed and with pyroute2's expected values; then every buffer mutilated (truncation, bit flips,
//! random bytes, lying lengths): no panic. The view the card is built from (radios, `client.wifi`)
//! and the station providers' parser are checked here too.
//!
//! The captures are little-endian (x86_64) and netlink is host-endian: `load` turns them into this
//! host's byte order (headers, and the integers of every attribute the parser reads), so that on
//! big-endian MIPS (`cross/test.sh mips-unknown-linux-musl`, under qemu-user) the parser meets the
//! bytes a big-endian kernel would send, and the same values must come out.
use std::collections::BTreeMap;
use std::path::PathBuf;

use boxapi::card::nl80211::{
    self as parse, fmt_mac, merge_wiphy, parse_interface, parse_station, standard, Band, Phy,
};
use boxapi::card::nla::{attrs, messages};
use boxapi::card::wifi;
use serde_json::json;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nl80211")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// (direction, bytes) per syscall buffer, in this host's byte order
fn load(name: &str) -> Vec<(String, Vec<u8>)> {
    let t = std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.lines()
        .filter_map(|l| {
            let (d, h) = l.split_once(' ')?;
            Some((d.to_string(), to_host(&unhex(h.trim()))))
        })
        .collect()
}

/// What an attribute holds, as far as the byte order goes: an integer, attributes (`Nest`), or
/// attributes that each hold attributes (`Each`: the per-band and per-frequency lists). Anything
/// not named is bytes, copied as it is.
#[derive(Clone, Copy)]
enum Kind {
    U16,
    U32,
    U64,
    Nest(&'static [(u16, Kind)]),
    Each(&'static [(u16, Kind)]),
}
/// nl80211_rate_info: BITRATE (u16), BITRATE32 (u32); the rest are u8 and flags.
const RATE: &[(u16, Kind)] = &[(1, Kind::U16), (5, Kind::U32)];
/// nl80211_sta_info: TX_BITRATE, RX_BITRATE, CONNECTED_TIME, RX_BYTES64, TX_BYTES64.
const STA_INFO: &[(u16, Kind)] = &[
    (8, Kind::Nest(RATE)),
    (14, Kind::Nest(RATE)),
    (16, Kind::U32),
    (23, Kind::U64),
    (24, Kind::U64),
];
const FREQ: &[(u16, Kind)] = &[(1, Kind::U32)];
/// The HE/EHT PHY capabilities inside IFTYPE_DATA are byte arrays: only the headers turn.
const IFTYPE_DATA: &[(u16, Kind)] = &[];
/// nl80211_band_attr: FREQS, HT_CAPA (u16), VHT_CAPA (u32), IFTYPE_DATA.
const BAND: &[(u16, Kind)] = &[
    (1, Kind::Each(FREQ)),
    (4, Kind::U16),
    (8, Kind::U32),
    (9, Kind::Each(IFTYPE_DATA)),
];
/// nl80211 attributes: WIPHY, IFINDEX, IFTYPE, STA_INFO, WIPHY_BANDS, WIPHY_FREQ, GENERATION,
/// CHANNEL_WIDTH, CENTER_FREQ1.
const NL80211: &[(u16, Kind)] = &[
    (1, Kind::U32),
    (3, Kind::U32),
    (5, Kind::U32),
    (21, Kind::Nest(STA_INFO)),
    (22, Kind::Each(BAND)),
    (38, Kind::U32),
    (46, Kind::U32),
    (159, Kind::U32),
    (160, Kind::U32),
];
/// genl ctrl: FAMILY_ID (u16).
const CTRL: &[(u16, Kind)] = &[(1, Kind::U16)];

/// Appends the little-endian integer `le` (2, 4 or 8 bytes) in this host's order; other lengths
/// as they are.
fn int(le: &[u8], out: &mut Vec<u8>) {
    match le.len() {
        2 => out.extend(u16::from_le_bytes([le[0], le[1]]).to_ne_bytes()),
        4 => out.extend(u32::from_le_bytes(le.try_into().unwrap()).to_ne_bytes()),
        8 => out.extend(u64::from_le_bytes(le.try_into().unwrap()).to_ne_bytes()),
        _ => out.extend(le),
    }
}

fn attrs_to_host(le: &[u8], schema: &'static [(u16, Kind)], each: bool, out: &mut Vec<u8>) {
    let mut pos = 0;
    while pos + 4 <= le.len() {
        let len = usize::from(u16::from_le_bytes([le[pos], le[pos + 1]]));
        let ty = u16::from_le_bytes([le[pos + 2], le[pos + 3]]);
        if len < 4 || pos + len > le.len() {
            break;
        }
        int(&le[pos..pos + 2], out);
        int(&le[pos + 2..pos + 4], out);
        let body = &le[pos + 4..pos + len];
        let kind = if each {
            Some(Kind::Nest(schema))
        } else {
            schema
                .iter()
                .find(|(t, _)| *t == ty & 0x3fff)
                .map(|(_, k)| *k)
        };
        match kind {
            Some(Kind::U16) if body.len() == 2 => int(body, out),
            Some(Kind::U32) if body.len() == 4 => int(body, out),
            Some(Kind::U64) if body.len() == 8 => int(body, out),
            Some(Kind::Nest(s)) => attrs_to_host(body, s, false, out),
            Some(Kind::Each(s)) => attrs_to_host(body, s, true, out),
            _ => out.extend(body),
        }
        let next = (pos + len + 3) & !3;
        out.extend(&le[pos + len..next.min(le.len())]);
        pos = next;
    }
    out.extend(&le[pos.min(le.len())..]);
}

/// A little-endian netlink buffer (messages of the nl80211 family or genl ctrl, NLMSG_DONE and
/// NLMSG_ERROR) in this host's byte order: the identity on little-endian hosts.
fn to_host(le: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(le.len());
    let mut pos = 0;
    while pos + 16 <= le.len() {
        let len = u32::from_le_bytes(le[pos..pos + 4].try_into().unwrap()) as usize;
        let ty = u16::from_le_bytes([le[pos + 4], le[pos + 5]]);
        if len < 16 || pos + len > le.len() {
            break;
        }
        for (a, b) in [(0, 4), (4, 6), (6, 8), (8, 12), (12, 16)] {
            int(&le[pos + a..pos + b], &mut out);
        }
        let body = &le[pos + 16..pos + len];
        match ty {
            // NLMSG_ERROR / NLMSG_DONE: an errno first
            2 | 3 if body.len() >= 4 => {
                int(&body[..4], &mut out);
                out.extend(&body[4..]);
            }
            0x10.. if body.len() >= 4 => {
                out.extend(&body[..2]); // genl command, version
                int(&body[2..4], &mut out);
                let schema = if ty == 0x10 { CTRL } else { NL80211 };
                attrs_to_host(&body[4..], schema, false, &mut out);
            }
            _ => out.extend(body),
        }
        let next = (pos + len + 3) & !3;
        out.extend(&le[pos + len..next.min(le.len())]);
        pos = next;
    }
    out.extend(&le[pos.min(le.len())..]);
    out
}

#[test]
fn the_captures_are_turned_into_this_hosts_order() {
    // Little-endian hosts read them as they are; on big-endian ones every buffer with a message
    // in it changes (the tests below then read big-endian bytes), keeping its length.
    for e in std::fs::read_dir(dir()).unwrap().flatten() {
        let n = e.file_name().into_string().unwrap();
        if let Some(t) = n.strip_suffix(".hex") {
            let raw = std::fs::read_to_string(dir().join(&n)).unwrap();
            for l in raw.lines().filter_map(|l| l.split_once(' ')) {
                let b = unhex(l.1.trim());
                let h = to_host(&b);
                assert_eq!(h.len(), b.len(), "{t}");
                if cfg!(target_endian = "little") {
                    assert_eq!(h, b, "{t}");
                } else if b.len() >= 16 {
                    assert_ne!(h, b, "{t}");
                }
            }
        }
    }
}

/// nl80211 reply bodies with their genl command, family id learnt from the ctrl reply
fn replies(name: &str) -> Vec<(u8, Vec<u8>)> {
    let bufs = load(name);
    let mut fam = None;
    let mut out = Vec::new();
    for (d, b) in &bufs {
        if d != "recv" {
            continue;
        }
        for m in messages(b) {
            if m.ty == 0x10 {
                if let Some((_, body)) = m.genl() {
                    fam = parse::ctrl_family_id(body).or(fam);
                }
            } else if Some(m.ty) == fam {
                let (cmd, body) = m.genl().expect("genl header");
                out.push((cmd, body.to_vec()));
            }
        }
    }
    assert!(fam.is_some(), "{name}: no nl80211 family id in the capture");
    out
}

fn prefixes() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix("_station_dump_ap.hex").map(str::to_string))
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

fn iw_text(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap()
}

/// "7.2 MBit/s" → 7200 kbit/s
fn mbit_to_kbps(s: &str) -> u64 {
    let v = s.split_whitespace().next().unwrap();
    let (i, f) = v.split_once('.').unwrap_or((v, "0"));
    i.parse::<u64>().unwrap() * 1000 + f.parse::<u64>().unwrap() * 100
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(key).map(str::trim))
}

#[test]
fn stations_match_iw() {
    for p in prefixes() {
        for side in ["ap", "sta"] {
            let name = format!("{p}_station_dump_{side}");
            let text = iw_text(&format!("{name}.txt"));
            let sts: Vec<_> = replies(&format!("{name}.hex"))
                .into_iter()
                .filter(|(c, _)| *c == parse::CMD_NEW_STATION)
                .filter_map(|(_, b)| parse_station(&b))
                .collect();
            assert_eq!(sts.len(), 1, "{name}");
            let s = &sts[0];
            let mac = text
                .lines()
                .next()
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap();
            assert_eq!(fmt_mac(s.mac.as_ref().unwrap()), mac, "{name}");
            let sig: i8 = field(&text, "signal:")
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(s.signal_dbm, Some(sig), "{name}");
            let tx = field(&text, "tx bitrate:").unwrap();
            let rx = field(&text, "rx bitrate:").unwrap();
            assert_eq!(
                s.tx.as_ref().unwrap().kbps(),
                Some(mbit_to_kbps(tx)),
                "{name} tx"
            );
            assert_eq!(
                s.rx.as_ref().unwrap().kbps(),
                Some(mbit_to_kbps(rx)),
                "{name} rx"
            );
            let band = if p.starts_with('5') {
                Band::G5
            } else {
                Band::G2_4
            };
            for (r, t) in [(s.tx.as_ref().unwrap(), tx), (s.rx.as_ref().unwrap(), rx)] {
                let want = if t.contains("VHT-MCS") {
                    "ac"
                } else if t.contains("HE-MCS") {
                    "ax"
                } else if t.contains("MCS") {
                    "n"
                } else if band == Band::G5 {
                    "a"
                } else {
                    "g"
                };
                // iw: "VHT-MCS 4 VHT-NSS 3" / "MCS 15 short GI"
                let mcs = t
                    .split("MCS ")
                    .nth(1)
                    .and_then(|x| x.split_whitespace().next())
                    .map(|x| x.parse::<u8>().unwrap());
                assert_eq!(r.mcs, mcs, "{name} {t}");
                if let Some(n) = t.split("NSS ").nth(1) {
                    assert_eq!(
                        r.nss,
                        n.split_whitespace().next().unwrap().parse().ok(),
                        "{name} {t}"
                    );
                }
                assert_eq!(r.short_gi, t.contains("short GI"), "{name} {t}");
                let w = t
                    .split_whitespace()
                    .find_map(|x| x.strip_suffix("MHz"))
                    .and_then(|x| x.parse::<u16>().ok());
                assert_eq!(r.width_mhz, Some(w.unwrap_or(20)), "{name} {t}");
                assert_eq!(standard(r, Some(band)), Some(want), "{name} {t}");
            }
            eprintln!("{name}: {s:?}");
        }
    }
}

#[test]
fn interfaces_match_iw() {
    for p in prefixes() {
        for name in [
            format!("{p}_interface_dump"),
            format!("{p}_interface_dump_sta"),
        ] {
            let full = iw_text(&format!("{name}.txt"));
            // non-netdev wdevs (wpa_supplicant's P2P-device) have no ifindex and are skipped
            let text = full[full.find("\tInterface ").unwrap()..].to_string();
            let ifs: Vec<_> = replies(&format!("{name}.hex"))
                .into_iter()
                .filter(|(c, _)| *c == parse::CMD_NEW_INTERFACE)
                .filter_map(|(_, b)| parse_interface(&b))
                .collect();
            let names: Vec<_> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Interface "))
                .collect();
            assert_eq!(ifs.len(), names.len(), "{name}");
            for (i, n) in ifs.iter().zip(names) {
                assert_eq!(i.name.as_deref(), Some(n));
            }
            let i = &ifs[0];
            assert_eq!(
                i.ifindex,
                field(&text, "ifindex").and_then(|v| v.parse().ok()),
                "{name}"
            );
            assert_eq!(
                i.mac.as_ref().map(fmt_mac).as_deref(),
                field(&text, "addr"),
                "{name}"
            );
            // "channel 36 (5180 MHz), width: 80 MHz, center1: 5210 MHz"
            let ch = field(&text, "channel").unwrap();
            let num = |after: &str| {
                ch.split(after)
                    .nth(1)
                    .unwrap()
                    .trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse::<u32>()
                    .unwrap()
            };
            assert_eq!(i.freq_mhz, Some(num("(")), "{name}");
            assert_eq!(i.width_mhz.map(u32::from), Some(num("width:")), "{name}");
            assert_eq!(i.center_freq1_mhz, Some(num("center1:")), "{name}");
            assert_eq!(
                i.band(),
                Some(if p.starts_with('5') {
                    Band::G5
                } else {
                    Band::G2_4
                })
            );
            let ty = field(&text, "type").unwrap();
            assert_eq!(
                i.iftype_str(),
                if ty == "AP" { "ap" } else { "station" },
                "{name}"
            );
        }
    }
}

#[test]
fn wiphys_match_iw() {
    for p in prefixes() {
        let name = format!("{p}_wiphy_dump");
        let text = iw_text(&format!("{name}.txt"));
        let mut ws = Vec::new();
        let rep = replies(&format!("{name}.hex"));
        assert!(rep.len() > 2, "split dump: several messages");
        for (c, b) in rep {
            if c != parse::CMD_NEW_WIPHY {
                continue; // iw phy first asks for NL80211_CMD_GET_PROTOCOL_FEATURES (95)
            }
            merge_wiphy(&mut ws, &b).unwrap();
        }
        // what iw printed: phy -> band number (nl80211 index + 1) -> enabled freqs
        let mut want: BTreeMap<(String, u16), Vec<u32>> = BTreeMap::new();
        let (mut phy, mut band) = (String::new(), 0u16);
        for l in text.lines() {
            if let Some(x) = l.strip_prefix("Wiphy ") {
                phy = x.trim().into();
            } else if let Some(x) = l.trim().strip_prefix("Band ") {
                band = x.trim_end_matches(':').parse().unwrap();
            } else if let Some(x) = l.trim().strip_prefix("* ") {
                // band 5 is S1G (sub-GHz, frequencies with decimals): not parsed on purpose
                if x.contains(" MHz [") && !x.contains("(disabled)") && band <= 4 {
                    want.entry((phy.clone(), band))
                        .or_default()
                        .push(x.split_whitespace().next().unwrap().parse().unwrap());
                }
            } else if l.starts_with("\tSupported interface modes") {
                band = 0;
            }
        }
        let mut got: BTreeMap<(String, u16), Vec<u32>> = BTreeMap::new();
        for w in &ws {
            for b in &w.bands {
                let idx = match b.band {
                    Band::G2_4 => 1,
                    Band::G5 => 2,
                    Band::G60 => 3,
                    Band::G6 => 4,
                };
                if !b.freqs.is_empty() {
                    got.insert((w.name.clone().unwrap(), idx), b.freqs.clone());
                }
            }
        }
        assert_eq!(got, want, "{name}");
        let w0 = &ws[0];
        let b24 = w0.bands.iter().find(|b| b.band == Band::G2_4).unwrap();
        assert!(b24.ht);
        assert_eq!(b24.he, text.contains("HE Iftypes"));
        if p.starts_with('5') {
            let b5 = w0.bands.iter().find(|b| b.band == Band::G5).unwrap();
            assert!(b5.vht && b5.freqs.contains(&5180));
        }
        eprintln!(
            "{name}: {}",
            ws.iter()
                .map(|w| format!(
                    "{:?}: {:?}",
                    w.name,
                    w.bands
                        .iter()
                        .map(|b| (b.band.as_str(), b.standard(), b.freqs.len()))
                        .collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
}

/// pyroute2-encoded messages (tests/wifi/fixtures/pyroute2_fixtures.py): expected values are in
/// the companion .expect file, one line per message.
#[test]
fn pyroute2_messages() {
    let Ok(t) = std::fs::read_to_string(dir().join("pyroute2_stations.expect")) else {
        panic!("pyroute2_stations.expect is missing")
    };
    let bufs = load("pyroute2_stations.hex");
    assert_eq!(bufs.len(), t.lines().count());
    for ((_, b), exp) in bufs.iter().zip(t.lines()) {
        // expect line: name band standard signal tx_kbps rx_kbps tx_phy
        let f: Vec<&str> = exp.split_whitespace().collect();
        let m = messages(b).next().expect("one message");
        let (cmd, body) = m.genl().unwrap();
        assert_eq!(cmd, parse::CMD_NEW_STATION);
        let s = parse_station(body).expect(f[0]);
        let band = match f[1] {
            "2.4GHz" => Band::G2_4,
            "5GHz" => Band::G5,
            _ => Band::G6,
        };
        assert_eq!(s.standard(Some(band)).unwrap_or("-"), f[2], "{exp}");
        assert_eq!(
            s.signal_dbm.map_or("-".into(), |v| v.to_string()),
            f[3],
            "{exp}"
        );
        assert_eq!(
            s.tx.as_ref()
                .and_then(|r| r.kbps())
                .map_or("-".into(), |v| v.to_string()),
            f[4],
            "{exp}"
        );
        assert_eq!(
            s.rx.as_ref()
                .and_then(|r| r.kbps())
                .map_or("-".into(), |v| v.to_string()),
            f[5],
            "{exp}"
        );
        assert_eq!(
            s.tx.as_ref()
                .and_then(|r| r.width_mhz)
                .map_or("-".into(), |v| v.to_string()),
            f[6],
            "{exp}"
        );
    }
}

/// xorshift: deterministic "random" bytes without a dependency
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn parse_everything(b: &[u8]) -> usize {
    let mut n = 0;
    let mut ws = Vec::new();
    for m in messages(b) {
        let _ = m.error_code();
        if let Some((_, body)) = m.genl() {
            n += parse_station(body).is_some() as usize;
            n += parse_interface(body).is_some() as usize;
            let _ = merge_wiphy(&mut ws, body);
            let _ = parse::ctrl_family_id(body);
            let _ = parse::parse_rate_info(body);
            for a in attrs(body) {
                let _ = (
                    a.u8(),
                    a.u16(),
                    a.u32(),
                    a.u64(),
                    a.mac(),
                    a.str(),
                    a.nested().count(),
                );
            }
        }
    }
    // also feed the raw bytes as if they were an attribute body
    let _ = parse_station(b);
    let _ = parse_interface(b);
    let _ = merge_wiphy(&mut ws, b);
    n
}

#[test]
fn truncated_and_garbage_never_panic() {
    let mut all: Vec<Vec<u8>> = Vec::new();
    for e in std::fs::read_dir(dir()).unwrap().flatten() {
        let n = e.file_name().into_string().unwrap();
        if n.ends_with(".hex") {
            all.extend(load(&n).into_iter().map(|(_, b)| b));
        }
    }
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for b in &all {
        // Every truncation point of a short buffer, about 300 spread over a long one (parsing is
        // linear, so every cut of a 30 KB wiphy dump would take minutes in a debug build).
        let step = (b.len() / 300).max(1);
        for cut in (0..b.len()).step_by(step) {
            parse_everything(&b[..cut]);
            parse_everything(&b[cut..]);
        }
        // random byte changes
        for _ in 0..60 {
            let mut m = b.clone();
            let k = 1 + (rng.next() % 8) as usize;
            for _ in 0..k {
                if m.is_empty() {
                    break;
                }
                let i = (rng.next() as usize) % m.len();
                m[i] = rng.next() as u8;
            }
            parse_everything(&m);
        }
    }
    for len in [0usize, 1, 3, 4, 15, 16, 17, 20, 64, 4096] {
        for _ in 0..500 {
            let v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            parse_everything(&v);
        }
    }
    // hand-made nasties: nlmsg_len 0 / huge, nla_len 0 / 1 / 0xffff, nested loops
    let nasties: [&[u8]; 6] = [
        &[0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[
            0xff, 0xff, 0xff, 0xff, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 19, 1, 0, 0,
        ],
        &[
            24, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 19, 1, 0, 0, 0, 0, 6, 0,
        ],
        &[
            28, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 19, 1, 0, 0, 1, 0, 21, 0, 0, 0, 0, 0,
        ],
        &[
            28, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 19, 1, 0, 0, 0xff, 0xff, 21, 0x80, 0,
            0, 0, 0,
        ],
        &[],
    ];
    for n in nasties {
        parse_everything(n);
    }
}

#[test]
fn truncated_station_gives_none_or_partial() {
    // cutting a real station message at any point: either None (no MAC /
    // STA_INFO yet) or a station whose present fields equal the full parse
    let body = replies("2n_station_dump_ap.hex")
        .into_iter()
        .find(|(c, _)| *c == parse::CMD_NEW_STATION)
        .unwrap()
        .1;
    let full = parse_station(&body).unwrap();
    for cut in 0..body.len() {
        if let Some(s) = parse_station(&body[..cut]) {
            assert_eq!(s.mac, full.mac);
            // a nested STA_INFO cut short is dropped as a whole (its length
            // exceeds the buffer), so fields are all-or-nothing
            assert!(s.signal_dbm.is_none() || s.signal_dbm == full.signal_dbm);
            assert!(s.tx.is_none() || s.tx == full.tx);
        }
    }
    assert_eq!(full.tx.as_ref().unwrap().phy, Some(Phy::Ht));
}

#[test]
fn pyroute2_interfaces() {
    let t = std::fs::read_to_string(dir().join("pyroute2_interfaces.expect"))
        .expect("pyroute2_interfaces.expect");
    let bufs = load("pyroute2_interfaces.hex");
    assert_eq!(bufs.len(), t.lines().count());
    for ((_, b), exp) in bufs.iter().zip(t.lines()) {
        // name ifindex ifname freq band width
        let f: Vec<&str> = exp.split_whitespace().collect();
        let m = messages(b).next().unwrap();
        let (cmd, body) = m.genl().unwrap();
        assert_eq!(cmd, parse::CMD_NEW_INTERFACE);
        let i = parse_interface(body).expect(f[0]);
        assert_eq!(i.ifindex.unwrap().to_string(), f[1]);
        assert_eq!(i.name.as_deref(), Some(f[2]));
        assert_eq!(i.freq_mhz.unwrap().to_string(), f[3]);
        assert_eq!(i.band().map(Band::as_str), Some(f[4]), "{exp}");
        assert_eq!(i.width_mhz.unwrap().to_string(), f[5], "{exp}");
    }
}

/// One refresh's reading rebuilt from the captures of one VM run: the AP side's interface,
/// station and wiphy dumps.
fn reading(prefix: &str) -> wifi::Reading {
    let of = |file: &str, cmd: u8| -> Vec<Vec<u8>> {
        replies(&format!("{prefix}_{file}.hex"))
            .into_iter()
            .filter(|(c, _)| *c == cmd)
            .map(|(_, b)| b)
            .collect()
    };
    let interfaces: Vec<_> = of("interface_dump", parse::CMD_NEW_INTERFACE)
        .iter()
        .filter_map(|b| parse_interface(b))
        .collect();
    let ap = interfaces[0].ifindex.unwrap();
    let stations = of("station_dump_ap", parse::CMD_NEW_STATION)
        .iter()
        .filter_map(|b| parse_station(b))
        .map(|s| (ap, s))
        .collect();
    let mut wiphys = Vec::new();
    for b in of("wiphy_dump", parse::CMD_NEW_WIPHY) {
        merge_wiphy(&mut wiphys, &b).unwrap();
    }
    wifi::Reading {
        interfaces,
        stations,
        wiphys,
    }
}

fn station(v: &wifi::View, mac: [u8; 6]) -> &serde_json::Value {
    &v.stations
        .iter()
        .find(|(m, _)| *m == mac)
        .expect("the station")
        .1
}

#[test]
fn the_card_view_of_the_hwsim_captures() {
    // 2.4 GHz, HT40 AP on channel 1; its station sends at 13.0 Mbit/s MCS 8 and receives at
    // 7.2 Mbit/s MCS 0 (the box's rx and tx rates: iw on the AP side).
    let v = wifi::view(&reading("2n"), std::time::Instant::now());
    let sta = station(&v, [2, 0, 0, 0, 1, 0]);
    assert_eq!(
        *sta,
        json!({"band": "2.4GHz", "standard": "n", "signal_dbm": -30, "tx_kbps": 13000,
               "rx_kbps": 7200, "channel": 1, "frequency_mhz": 2412, "channel_width_mhz": 40})
    );
    assert_eq!(
        v.layer.as_ref().unwrap()["wifi"],
        json!({"enabled": true, "radios": [{"band": "2.4GHz", "enabled": true, "standard": "n",
               "channel": 1, "frequency_mhz": 2412, "channel_width_mhz": 40}]})
    );
    // 5 GHz, VHT80 on channel 36 (country FR).
    let v = wifi::view(&reading("5ac"), std::time::Instant::now());
    let sta = station(&v, [2, 0, 0, 0, 1, 0]);
    assert_eq!(sta["band"], "5GHz");
    assert_eq!(sta["standard"], "ac");
    assert_eq!(sta["signal_dbm"], -27);
    assert_eq!(
        (sta["tx_kbps"].as_u64(), sta["rx_kbps"].as_u64()),
        (Some(13000), Some(13000))
    );
    let radio = &v.layer.as_ref().unwrap()["wifi"]["radios"][0];
    assert_eq!(radio["standard"], "ac");
    assert_eq!(
        (
            radio["channel"].as_u64(),
            radio["channel_width_mhz"].as_u64()
        ),
        (Some(36), Some(80))
    );
}

#[test]
fn a_radio_without_stations_says_what_its_hardware_supports() {
    let mut r = reading("2n");
    r.stations.clear();
    let v = wifi::view(&r, std::time::Instant::now());
    // hwsim advertises EHT on every band: with no station to go by, the capability it is.
    assert_eq!(
        v.layer.as_ref().unwrap()["wifi"]["radios"][0]["standard"],
        "be"
    );
    assert!(v.stations.is_empty());
    // No interface on the radio: listed, not enabled, its band unknown (it has two usable ones).
    r.interfaces.clear();
    let v = wifi::view(&r, std::time::Instant::now());
    let radio = &v.layer.as_ref().unwrap()["wifi"]["radios"][0];
    assert_eq!(radio["enabled"], false);
    assert_eq!(radio["band"], serde_json::Value::Null);
    assert_eq!(v.layer.as_ref().unwrap()["wifi"]["enabled"], false);
    // Nothing at all: no layer, so sysfs and the operator's layers decide.
    assert!(
        wifi::view(&wifi::Reading::default(), std::time::Instant::now())
            .layer
            .is_none()
    );
}

#[test]
fn standards_widths_and_channels() {
    assert_eq!(parse::newer(Some("n"), Some("ac")), Some("ac"));
    assert_eq!(parse::newer(Some("g"), Some("b")), Some("g"));
    assert_eq!(parse::newer(None, Some("b")), Some("b"));
    assert_eq!(parse::width_floor(Some(80), Some(Band::G5)), Some("ac"));
    assert_eq!(parse::width_floor(Some(40), Some(Band::G2_4)), Some("n"));
    assert_eq!(parse::width_floor(Some(20), Some(Band::G2_4)), None);
    assert_eq!(parse::width_floor(Some(20), Some(Band::G6)), Some("ax"));
    assert_eq!(parse::width_floor(Some(320), Some(Band::G6)), Some("be"));
    for (f, c) in [
        (2412, 1),
        (2472, 13),
        (2484, 14),
        (5180, 36),
        (5825, 165),
        (5955, 1),
        (5935, 2),
        (6415, 93),
    ] {
        assert_eq!(parse::channel(f), Some(c), "{f}");
    }
    assert_eq!(parse::channel(900), None);
}

#[test]
fn station_provider_output_is_checked_member_by_member() {
    let out = br#"{
        "AA-BB-CC-00-00-01": {"band": "5GHz", "standard": "ax", "signal_dbm": -52, "tx_kbps": 864000, "rx_kbps": 1200000},
        "aa:bb:cc:00:00:02": {"band": "7GHz", "standard": "n", "signal_dbm": 5000, "tx_kbps": -1, "colour": "red", "rx_kbps": null},
        "not-a-mac": {"band": "5GHz"},
        "aa:bb:cc:00:00:03": [1, 2],
        "aa:bb:cc:00:00:04": {"channel_width_mhz": 80, "channel": 36, "frequency_mhz": 5180}
    }"#;
    let (map, problems) = wifi::parse_stations(out).unwrap();
    assert_eq!(
        map["aa:bb:cc:00:00:01"],
        json!({"band": "5GHz", "standard": "ax", "signal_dbm": -52, "tx_kbps": 864000, "rx_kbps": 1200000})
    );
    // Bad members are dropped (null in the card), the good ones kept.
    assert_eq!(
        map["aa:bb:cc:00:00:02"],
        json!({"standard": "n", "rx_kbps": null})
    );
    assert_eq!(map["aa:bb:cc:00:00:04"]["channel"], 36);
    assert_eq!(map.len(), 3);
    assert_eq!(problems.len(), 6, "{problems:?}");
    assert!(problems
        .iter()
        .any(|p| p.contains("colour") && p.contains("unknown member")));
    for bad in [&b"[]"[..], b"nope", b"", b"{\"a\": 1", b"\"x\""] {
        assert!(wifi::parse_stations(bad).is_err());
    }
    // One station spelt twice: one entry, the duplicate reported.
    let twice =
        br#"{"AA-BB-CC-00-00-09": {"band": "5GHz"}, "aa:bb:cc:00:00:09": {"band": "6GHz"}}"#;
    let (map, problems) = wifi::parse_stations(twice).unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("same MAC"), "{problems:?}");
    // A flood of entries is cut at a bound.
    let mut big = String::from("{");
    for i in 0..1500u32 {
        big.push_str(&format!(
            "\"02:00:00:00:{:02x}:{:02x}\": {{}},",
            i >> 8,
            i & 0xff
        ));
    }
    big.push_str("\"02:00:00:ff:ff:ff\": {}}");
    let (map, problems) = wifi::parse_stations(big.as_bytes()).unwrap();
    assert_eq!(map.len(), 1024);
    assert_eq!(problems.len(), 1);
    assert_eq!(
        wifi::parse_mac("02:00:00:00:01:00"),
        Some([2, 0, 0, 0, 1, 0])
    );
    for bad in [
        "02:00:00:00:01",
        "02:00:00:00:01:00:00",
        "2:0:0:0:1:0",
        "zz:00:00:00:01:00",
        "+2:00:00:00:01:00",
    ] {
        assert_eq!(wifi::parse_mac(bad), None, "{bad}");
    }
}
