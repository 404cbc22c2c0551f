//! The access identity card: system readings merged with the operator's partial-card layers.
pub mod layer;
pub mod neigh;
pub mod nl80211;
pub mod nla;
pub mod provider;
pub mod sys;
pub mod wifi;
pub mod withhold;

use boxapi_core::control::{Section, Sections};
use boxapi_core::json as write_json;
pub use layer::{merge, project, validate_layer, TECHNOLOGIES};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The card's sections that come only from the layers, serialized, with the layer values they
/// were made from. The layers change rarely (sysfs radios every 10 s, nl80211 every few
/// seconds, providers when re-read or re-run), so a request whose layers are the very same
/// values (the same `Arc`s) reuses these bytes instead of merging and serializing again. One
/// per configuration snapshot, whose static layer is therefore always the same.
#[derive(Default)]
pub struct Projected {
    last: Mutex<Option<(Inputs, Arc<SectionBytes>)>>,
}

type Layer = Option<Arc<Value>>;

/// The box, subscription, access and wifi sections, serialized.
type SectionBytes = [Vec<u8>; 4];

/// The layers one card was made from (held, so that an address is never reused while compared).
struct Inputs {
    sys: Arc<Value>,
    wifi: Layer,
    file: Layer,
    command: Layer,
}

impl Inputs {
    fn same(&self, other: &Inputs) -> bool {
        fn same(a: &Layer, b: &Layer) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
        }
        Arc::ptr_eq(&self.sys, &other.sys)
            && same(&self.wifi, &other.wifi)
            && same(&self.file, &other.file)
            && same(&self.command, &other.command)
    }
}

/// A pair of byte counters; a member is `null` when unknown.
struct ByteCounts {
    rx_bytes: Option<u64>,
    tx_bytes: Option<u64>,
}

/// Where the card's values come from, for one request.
pub struct Sources<'a> {
    pub sys: &'a sys::Sys,
    pub wan_interface: Option<&'a str>,
    pub static_layer: &'a Value,
    pub file: Option<&'a provider::FileLayer>,
    pub command: Option<&'a provider::CommandLayer>,
    /// What nl80211 says (the daemon's refresher; none in tools and tests without it).
    pub wifi: Option<&'a wifi::Wifi>,
    pub station_file: Option<&'a provider::FileLayer>,
    pub station_command: Option<&'a provider::CommandLayer>,
    /// The last card's layer sections (the snapshot's).
    pub projected: &'a Projected,
}

impl<'a> Sources<'a> {
    pub fn with_wifi(self, wifi: &'a wifi::Wifi) -> Self {
        Sources {
            wifi: Some(wifi),
            ..self
        }
    }

    /// The terminal's `client.wifi`, merged like the card's layers: nl80211 first, then
    /// `station_provider_file`, then `station_provider_command` (a `null` member in a higher
    /// layer leaves the lower one's value). `None` when the terminal is not on Wi-Fi. A terminal
    /// that a station provider lists is on Wi-Fi, whatever sysfs says of its port (vendor Wi-Fi
    /// drivers often look like Ethernet there). Reads only the last nl80211 view (no netlink
    /// here); a station command runs as `provider_command` does (deadline, 2 s cache).
    async fn client_wifi(&self, client: &sys::Client) -> Option<Value> {
        let key = client.mac.map(|m| nl80211::fmt_mac(&m));
        let mut provided = Vec::new();
        if let Some(k) = &key {
            if let Some(f) = self.station_file.and_then(provider::FileLayer::get) {
                provided.extend(f.get(k).cloned());
            }
            if let Some(c) = self.station_command {
                if let Some(v) = c.get().await {
                    provided.extend(v.get(k).cloned());
                }
            }
        }
        let kernel = match (self.wifi, client.mac) {
            (Some(wifi), Some(mac)) if client.connection != "ethernet" => wifi.station(&mac),
            _ => None,
        };
        // An associated station is on Wi-Fi even when the bridge could not say which port it
        // is behind ("unknown"); a port that sysfs says is Ethernet wins over a stale entry.
        if client.connection != "wifi" && provided.is_empty() && kernel.is_none() {
            return None;
        }
        let mut w = wifi::unknown_client_wifi();
        if let Some(v) = &kernel {
            merge(&mut w, v);
        }
        for p in &provided {
            merge(&mut w, p);
        }
        Some(w)
    }

    /// The WAN interface's counters, read now (both members null when unknown).
    fn wan(&self) -> ByteCounts {
        let c = self.wan_interface.and_then(|w| self.sys.counters(w));
        ByteCounts {
            rx_bytes: c.map(|c| c.0),
            tx_bytes: c.map(|c| c.1),
        }
    }

    /// The terminal's own counters, from its point of view: what it received is what the box's
    /// port transmitted.
    fn client_counters(&self, client: &sys::Client) -> Option<ByteCounts> {
        let (port_rx, port_tx) = client
            .counters_interface
            .as_deref()
            .and_then(|i| self.sys.counters(i))?;
        Some(ByteCounts {
            rx_bytes: Some(port_tx),
            tx_bytes: Some(port_rx),
        })
    }

    /// The box, subscription, access and wifi sections (every layer merged, system first,
    /// `provider_command` last), serialized; reused while the layers are the same values.
    async fn projected(&self) -> Arc<SectionBytes> {
        let inputs = Inputs {
            sys: self.sys.layer(),
            wifi: self.wifi.and_then(wifi::Wifi::layer),
            file: self.file.and_then(provider::FileLayer::get),
            command: match self.command {
                Some(c) => c.get().await,
                None => None,
            },
        };
        let mut last = self
            .projected
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((made_from, sections)) = last.as_ref() {
            if made_from.same(&inputs) {
                return sections.clone();
            }
        }
        let mut merged = match &*inputs.sys {
            Value::Null => json!({}),
            v => v.clone(),
        };
        // nl80211's radios, when it answered, replace what sysfs alone could tell.
        if let Some(Value::Object(w)) = inputs.wifi.as_deref() {
            if let Value::Object(m) = &mut merged {
                m.extend(w.clone());
            }
        }
        merge(&mut merged, self.static_layer);
        for layer in [&inputs.file, &inputs.command].into_iter().flatten() {
            merge(&mut merged, layer);
        }
        // Serializing a Value into a Vec cannot fail (string keys, no I/O).
        let sections =
            Arc::new(project(&merged).map(|(_, v)| serde_json::to_vec(&v).unwrap_or_default()));
        *last = Some((inputs, sections.clone()));
        sections
    }

    /// The card's `box.firmware_version` and `box.model` as the API answers them now.
    pub async fn box_facts(&self) -> (Option<String>, Option<String>) {
        let sections = self.projected().await;
        let b: Value = serde_json::from_slice(&sections[0]).unwrap_or_default();
        let text = |k: &str| b[k].as_str().map(str::to_owned);
        (text("firmware_version"), text("model"))
    }

    /// `GET /v1/access`, serialized: the layers' sections, then the terminal's `client` (its
    /// connection facts found once per connection, its Wi-Fi link from the last nl80211 view)
    /// and the counters read now. Each section the subscriber withholds is `null`, and
    /// `withheld` names them. Members in the order serde_json writes an object's (sorted); the
    /// per-request ones written with literal names (`boxapi_core::json`: this is the hot path).
    pub async fn access_card(&self, client: &sys::Client, withheld: Sections) -> Vec<u8> {
        let [box_, subscription, access, wifi] = &*self.projected().await;
        let mut client = client.clone();
        let client_wifi = self.client_wifi(&client).await;
        if let Some(w) = &client_wifi {
            client.connection = "wifi";
            // A Wi-Fi link's rate is the slower of its two directions (sysfs has no speed for a
            // Wi-Fi port); the port's own speed only when the rates are unknown.
            let rates = [w["tx_kbps"].as_u64(), w["rx_kbps"].as_u64()];
            if let Some(min) = rates.iter().flatten().min() {
                client.link_kbps = Some(*min);
            }
        }
        let withholds = |s| withheld.contains(s);
        let mut out = Vec::with_capacity(1024);
        if withhold::member(&mut out, b"{\"access\":", withholds(Section::Access)) {
            out.extend_from_slice(access);
        }
        out.extend_from_slice(b",\"api_version\":\"1.0\"");
        if withhold::member(&mut out, b",\"box\":", withholds(Section::Box)) {
            out.extend_from_slice(box_);
        }
        if withhold::member(&mut out, b",\"client\":", withholds(Section::Client)) {
            out.extend_from_slice(b"{\"connection\":");
            write_json::push_str(&mut out, client.connection);
            out.extend_from_slice(b",\"interface\":");
            write_json::push_opt_str(&mut out, client.interface.as_deref());
            out.extend_from_slice(b",\"link_kbps\":");
            write_json::push_opt_u64(&mut out, client.link_kbps);
            out.extend_from_slice(b",\"wifi\":");
            // Serializing a Value into a Vec cannot fail (string keys, no I/O).
            let _ = serde_json::to_writer(&mut out, &client_wifi);
            out.push(b'}');
        }
        if withhold::member(&mut out, b",\"counters\":", withholds(Section::Counters)) {
            // The time first, then the counters it dates (as `/v1/counters` does).
            let monotonic_us = boxapi_core::time::monotonic_us();
            let wan = self.wan();
            out.extend_from_slice(b"{\"monotonic_us\":");
            write_json::push_u64(&mut out, monotonic_us);
            out.extend_from_slice(b",\"wan\":");
            push_byte_counts(&mut out, Some(&wan));
            out.push(b'}');
        }
        if withhold::member(
            &mut out,
            b",\"subscription\":",
            withholds(Section::Subscription),
        ) {
            out.extend_from_slice(subscription);
        }
        out.extend_from_slice(b",\"timestamp\":\"");
        boxapi_core::time::push_rfc3339_millis(&mut out, SystemTime::now());
        out.push(b'"');
        if withhold::member(&mut out, b",\"wifi\":", withholds(Section::Wifi)) {
            out.extend_from_slice(wifi);
        }
        withhold::close(&mut out, withheld);
        out
    }

    /// `GET /v1/counters` (and each line of its stream), serialized: cheap, read fresh, no
    /// provider involved; what the subscriber withholds is `null` (`withhold::in_counters`).
    /// Members in the order serde_json writes an object's, with literal names.
    pub fn counters(&self, client: &sys::Client, withheld: Sections) -> Vec<u8> {
        let hidden = withhold::in_counters(withheld);
        // The time first, then the counters it dates.
        let now = SystemTime::now();
        let monotonic_us = boxapi_core::time::monotonic_us();
        let wan = (!hidden.wan).then(|| self.wan());
        let own = (!hidden.client).then(|| self.client_counters(client));
        let mut out = Vec::with_capacity(192);
        withhold::member(&mut out, b"{\"client\":", own.is_none());
        if let Some(own) = own {
            push_byte_counts(&mut out, own.as_ref());
        }
        out.extend_from_slice(b",\"monotonic_us\":");
        write_json::push_u64(&mut out, monotonic_us);
        out.extend_from_slice(b",\"timestamp\":\"");
        boxapi_core::time::push_rfc3339_millis(&mut out, now);
        out.push(b'"');
        withhold::member(&mut out, b",\"wan\":", wan.is_none());
        if let Some(wan) = &wan {
            push_byte_counts(&mut out, Some(wan));
        }
        withhold::close(&mut out, hidden.listed);
        out
    }
}

/// `{"rx_bytes":…,"tx_bytes":…}`, or `null` when the counts are not known at all.
fn push_byte_counts(out: &mut Vec<u8>, counts: Option<&ByteCounts>) {
    let Some(c) = counts else {
        out.extend_from_slice(b"null");
        return;
    };
    out.extend_from_slice(b"{\"rx_bytes\":");
    write_json::push_opt_u64(out, c.rx_bytes);
    out.extend_from_slice(b",\"tx_bytes\":");
    write_json::push_opt_u64(out, c.tx_bytes);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(src: &Sources<'_>, withheld: Sections) -> Value {
        card_for(src, &sys::Client::unknown(), withheld)
    }

    fn card_for(src: &Sources<'_>, client: &sys::Client, withheld: Sections) -> Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let bytes = rt.block_on(src.access_card(client, withheld));
        let card: Value = serde_json::from_slice(&bytes).unwrap();
        // Byte for byte what serde_json writes for the same card (members sorted, compact, the
        // same escapes): no duplicated or misplaced member can hide behind a parse.
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&card).unwrap()).unwrap(),
            String::from_utf8(bytes).unwrap()
        );
        card
    }

    /// The system's readings alone: no layer, provider or nl80211 view.
    fn system_only<'a>(sys: &'a sys::Sys, wan: &'a str, projected: &'a Projected) -> Sources<'a> {
        static NO_LAYER: Value = Value::Null;
        Sources {
            sys,
            wan_interface: Some(wan),
            static_layer: &NO_LAYER,
            file: None,
            command: None,
            wifi: None,
            station_file: None,
            station_command: None,
            projected,
        }
    }

    #[test]
    fn the_per_request_members_are_json_whatever_the_interface_is_called() {
        let sys = sys::Sys::with_root(std::path::Path::new("/nonexistent-boxapi-root"));
        let projected = Projected::default();
        let src = system_only(&sys, "wan\"0", &projected);
        let client = sys::Client {
            connection: "ethernet",
            interface: Some("lan\\1\u{7}é".into()),
            link_kbps: Some(1_000_000),
            ..sys::Client::default()
        };
        let c = card_for(&src, &client, Sections::default());
        assert_eq!(
            c["client"],
            json!({"connection": "ethernet", "interface": "lan\\1\u{7}é",
                "link_kbps": 1_000_000, "wifi": null})
        );
        assert_eq!(
            c["counters"]["wan"],
            json!({"rx_bytes": null, "tx_bytes": null})
        );
        assert!(c["counters"]["monotonic_us"].as_u64().is_some());
        let mut withheld = Sections::default();
        withheld.insert(Section::Box);
        let c = card_for(&src, &client, withheld);
        assert_eq!(
            (c["box"].clone(), c["withheld"].clone()),
            (Value::Null, json!(["box"]))
        );
    }

    #[test]
    fn counters_are_json_and_withheld_members_null() {
        let dir = std::env::temp_dir().join(format!("boxapi-counters-{}", std::process::id()));
        for (port, rx, tx) in [("wan0", 7, 8), ("lan\\1", 3, 4)] {
            let stats = dir.join("sys/class/net").join(port).join("statistics");
            std::fs::create_dir_all(&stats).unwrap();
            std::fs::write(stats.join("rx_bytes"), format!("{rx}\n")).unwrap();
            std::fs::write(stats.join("tx_bytes"), format!("{tx}\n")).unwrap();
        }
        let sys = sys::Sys::with_root(&dir);
        let projected = Projected::default();
        let src = system_only(&sys, "wan0", &projected);
        let client = sys::Client {
            counters_interface: Some("lan\\1".into()),
            ..sys::Client::default()
        };
        let counters = |client: &sys::Client, names: &[Section]| {
            let mut withheld = Sections::default();
            names.iter().for_each(|s| withheld.insert(*s));
            let bytes = src.counters(client, withheld);
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            // Byte for byte what serde_json writes for the same object.
            assert_eq!(serde_json::to_vec(&v).unwrap(), bytes);
            v
        };
        let c = counters(&client, &[Section::Wifi]);
        assert_eq!(c["wan"], json!({"rx_bytes": 7, "tx_bytes": 8}));
        // The terminal's view: what it received is what its port sent.
        assert_eq!(c["client"], json!({"rx_bytes": 4, "tx_bytes": 3}));
        assert!(c["monotonic_us"].as_u64().is_some() && c["timestamp"].is_string());
        assert_eq!(c["withheld"], json!([]));
        let c = counters(&client, &[Section::Client, Section::Box]);
        assert_eq!(
            (&c["client"], &c["wan"]["rx_bytes"]),
            (&Value::Null, &json!(7))
        );
        assert_eq!(c["withheld"], json!(["client"]));
        let c = counters(&client, &[Section::Counters]);
        assert_eq!((&c["client"], &c["wan"]), (&Value::Null, &Value::Null));
        assert_eq!(c["withheld"], json!(["counters"]));
        // Not withheld, unknown: null all the same, and not listed.
        let c = counters(&sys::Client::unknown(), &[]);
        assert_eq!((&c["client"], &c["withheld"]), (&Value::Null, &json!([])));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_card_is_written_whole_withheld_sections_null_and_layers_reused_until_they_change() {
        let dir = std::env::temp_dir().join(format!("boxapi-card-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("layer.json");
        std::fs::write(&file, r#"{"box": {"firmware_version": "1.0"}}"#).unwrap();
        let sys = sys::Sys::with_root(&dir);
        let static_layer =
            json!({"box": {"model": "M \"quoted\""}, "access": {"technology": "ftth"}});
        let file_layer = provider::FileLayer::new(file.clone());
        let projected = Projected::default();
        let src = Sources {
            sys: &sys,
            wan_interface: None,
            static_layer: &static_layer,
            file: Some(&file_layer),
            command: None,
            wifi: None,
            station_file: None,
            station_command: None,
            projected: &projected,
        };
        let c = card(&src, Sections::default());
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "access",
                "api_version",
                "box",
                "client",
                "counters",
                "subscription",
                "timestamp",
                "wifi",
                "withheld"
            ]
        );
        assert_eq!(c["box"]["model"], "M \"quoted\"");
        assert_eq!(c["box"]["firmware_version"], "1.0");
        assert_eq!(c["access"]["technology"], "ftth");
        assert_eq!(c["subscription"]["down_kbps"], Value::Null);
        assert_eq!(c["client"]["connection"], "unknown");
        assert!(c["counters"]["monotonic_us"].as_u64().is_some());
        assert_eq!(c["withheld"], json!([]));

        let mut withheld = Sections::default();
        withheld.insert(Section::Wifi);
        withheld.insert(Section::Client);
        let c = card(&src, withheld);
        assert_eq!(
            (c["wifi"].clone(), c["client"].clone()),
            (Value::Null, Value::Null)
        );
        assert_eq!(c["box"]["model"], "M \"quoted\"");
        assert_eq!(c["withheld"], json!(["wifi", "client"]));

        // The same layers: the same serialized sections, not made again.
        let first = projected.last.lock().unwrap().as_ref().unwrap().1.clone();
        card(&src, Sections::default());
        let again = projected.last.lock().unwrap().as_ref().unwrap().1.clone();
        assert!(Arc::ptr_eq(&first, &again));
        // A changed provider file (seen after its one-second check) makes them again.
        std::fs::write(&file, r#"{"box": {"firmware_version": "2.0 longer"}}"#).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let c = card(&src, Sections::default());
        assert_eq!(c["box"]["firmware_version"], "2.0 longer");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
