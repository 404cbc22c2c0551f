//! nl80211 replies (from the kernel, but parsed with the lengths they state): a receive buffer of
//! generic netlink messages, each body through every parser, then the view the card is built
//! from; and the same bytes as a station provider's output.
#![no_main]
use boxapi::card::{nl80211, nla, wifi};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reading = wifi::Reading::default();
    let mut messages = nla::messages(data);
    for m in messages.by_ref() {
        let _ = m.error_code();
        if let Some((_, body)) = m.genl() {
            reading.interfaces.extend(nl80211::parse_interface(body));
            if let Some(s) = nl80211::parse_station(body) {
                reading.stations.push((s.ifindex.unwrap_or(0), s));
            }
            let _ = nl80211::merge_wiphy(&mut reading.wiphys, body);
            let _ = nl80211::ctrl_family_id(body);
        }
    }
    let _ = messages.malformed();
    let _ = nl80211::parse_station(data);
    let _ = nl80211::parse_rate_info(data);
    let _ = wifi::view(&reading, std::time::Instant::now());
    let _ = wifi::parse_stations(data);
});
