//! The access identity card: system readings merged with the operator's partial-card layers.
pub mod layer;
pub mod neigh;
pub mod provider;
pub mod sys;
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
}

fn counters_json(c: Option<sys::Counters>) -> Value {
    match c {
        Some((rx, tx)) => json!({ "rx_bytes": rx, "tx_bytes": tx }),
        None => json!({ "rx_bytes": null, "tx_bytes": null }),
    }
}

impl Sources<'_> {
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
        merge(&mut merged, self.static_layer);
        if let Some(f) = self.file.and_then(provider::FileLayer::get) {
            merge(&mut merged, &f);
        }
        if let Some(c) = self.command {
            if let Some(v) = c.get().await {
                merge(&mut merged, &v);
            }
        }
        let client_wifi = if client.connection == "wifi" {
            json!({ "band": null, "standard": null, "signal_dbm": null, "tx_kbps": null, "rx_kbps": null })
        } else {
            Value::Null
        };
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
                "wifi": client_wifi,
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
