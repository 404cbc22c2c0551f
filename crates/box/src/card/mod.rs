//! The access identity card: system readings merged with the operator's partial-card layers.
pub mod layer;
pub mod neigh;
pub mod nl80211;
pub mod nla;
pub mod provider;
pub mod sys;
pub mod wifi;
pub mod withhold;

pub use layer::{merge, project, validate_layer, TECHNOLOGIES};
use serde_json::{json, Map, Value};
use std::time::SystemTime;

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
}

fn counters_json(c: Option<sys::Counters>) -> Value {
    match c {
        Some((rx, tx)) => json!({ "rx_bytes": rx, "tx_bytes": tx }),
        None => json!({ "rx_bytes": null, "tx_bytes": null }),
    }
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

    fn wan(&self) -> Value {
        counters_json(self.wan_interface.and_then(|w| self.sys.counters(w)))
    }

    /// The terminal's own counters, from its point of view: what it received is what the box's
    /// port transmitted.
    fn client_counters(&self, client: &sys::Client) -> Value {
        match client
            .counters_interface
            .as_deref()
            .and_then(|i| self.sys.counters(i))
        {
            Some((port_rx, port_tx)) => json!({ "rx_bytes": port_tx, "tx_bytes": port_rx }),
            None => Value::Null,
        }
    }

    /// `GET /v1/access`: every layer merged, system first, `provider_command` last. `client` is
    /// the connection's terminal, found once per connection.
    pub async fn access_card(&self, client: &sys::Client) -> Value {
        let mut merged = self.sys.layer();
        if merged.is_null() {
            merged = json!({});
        }
        // nl80211's radios, when it answered, replace what sysfs alone could tell.
        if let Some(Value::Object(w)) = self.wifi.and_then(wifi::Wifi::layer) {
            if let Value::Object(m) = &mut merged {
                m.extend(w);
            }
        }
        merge(&mut merged, self.static_layer);
        if let Some(f) = self.file.and_then(provider::FileLayer::get) {
            merge(&mut merged, &f);
        }
        if let Some(c) = self.command {
            if let Some(v) = c.get().await {
                merge(&mut merged, &v);
            }
        }
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
        let mut card = Map::new();
        card.insert("api_version".into(), json!("1.0"));
        card.insert(
            "timestamp".into(),
            json!(boxapi_core::time::rfc3339_millis(SystemTime::now())),
        );
        for (k, v) in project(&merged) {
            card.insert(k.into(), v);
        }
        card.insert(
            "client".into(),
            json!({
                "connection": client.connection,
                "interface": client.interface,
                "link_kbps": client.link_kbps,
                "wifi": client_wifi.unwrap_or(Value::Null),
            }),
        );
        card.insert(
            "counters".into(),
            json!({ "monotonic_us": boxapi_core::time::monotonic_us(), "wan": self.wan() }),
        );
        Value::Object(card)
    }

    /// `GET /v1/counters`: cheap, read fresh, no provider involved.
    pub fn counters(&self, client: &sys::Client) -> Value {
        json!({
            "timestamp": boxapi_core::time::rfc3339_millis(SystemTime::now()),
            "monotonic_us": boxapi_core::time::monotonic_us(),
            "wan": self.wan(),
            "client": self.client_counters(client),
        })
    }
}
