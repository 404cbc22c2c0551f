//! The subscriber's choices of what the card shares (CNIL: the person whose data it is decides;
//! DataPass/Loket: the rights in effect are the tool's rights intersected with the person's):
//! card sections withheld from every tool, with per-tool exceptions either way.
//!
//! The last command wins for its scope: `withhold S` / `allow S` set S for every tool (and clear
//! the per-tool choices about S), `withhold S --tool T` / `allow S --tool T` set S for T alone.
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// One section of the access identity card (contract §5), in the card's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Box,
    Subscription,
    Access,
    Wifi,
    Client,
    Counters,
}

impl Section {
    pub const ALL: [Section; 6] = [
        Section::Box,
        Section::Subscription,
        Section::Access,
        Section::Wifi,
        Section::Client,
        Section::Counters,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Box => "box",
            Section::Subscription => "subscription",
            Section::Access => "access",
            Section::Wifi => "wifi",
            Section::Client => "client",
            Section::Counters => "counters",
        }
    }

    pub fn from_name(name: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|s| s.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The section names, for messages.
pub const SECTION_NAMES: &str = "box, subscription, access, wifi, client, counters";

/// A set of sections (bits), iterated in the card's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sections(u8);

impl Sections {
    pub fn contains(self, s: Section) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn insert(&mut self, s: Section) {
        self.0 |= s.bit();
    }

    pub fn remove(&mut self, s: Section) {
        self.0 &= !s.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Section> {
        Section::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Section::name).collect()
    }

    /// Reads a list of section names; names this version does not know are skipped (a state
    /// written by a newer boxapi: an unknown section is one this version never serves anyway).
    pub fn from_json(v: &Value) -> Option<Sections> {
        let mut out = Sections::default();
        for name in v.as_array()? {
            if let Some(s) = Section::from_name(name.as_str()?) {
                out.insert(s);
            }
        }
        Some(out)
    }
}

/// One tool's exceptions to the choices made for every tool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exceptions {
    /// Withheld from this tool although shared with the others.
    pub withhold: Sections,
    /// Shared with this tool although withheld from the others.
    pub allow: Sections,
}

/// Per-tool choices are kept for at most this many tools (a registry holds a few hundred): the
/// state file and the daemon's memory stay bounded whatever the control socket is sent.
pub const MAX_TOOLS: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WithholdError {
    #[error("choices are already kept for {MAX_TOOLS} tools; allow sections to some first")]
    TooManyTools,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Withheld {
    /// Withheld from every tool (unless a tool's exception allows it).
    pub all: Sections,
    /// Per tool id; no entry is empty.
    pub tools: BTreeMap<String, Exceptions>,
}

impl Withheld {
    /// The sections withheld from this tool now.
    pub fn for_tool(&self, id: &str) -> Sections {
        let mut out = self.all;
        if let Some(e) = self.tools.get(id) {
            out.0 = (out.0 & !e.allow.0) | e.withhold.0;
        }
        out
    }

    /// `withhold` (`share == false`) or `allow` (`share == true`) one section, for every tool or one.
    pub fn set(
        &mut self,
        section: Section,
        tool: Option<&str>,
        share: bool,
    ) -> Result<(), WithholdError> {
        let Some(id) = tool else {
            if share {
                self.all.remove(section);
            } else {
                self.all.insert(section);
            }
            for e in self.tools.values_mut() {
                e.withhold.remove(section);
                e.allow.remove(section);
            }
            self.tools
                .retain(|_, e| !(e.withhold.is_empty() && e.allow.is_empty()));
            return Ok(());
        };
        if !self.tools.contains_key(id) && self.tools.len() >= MAX_TOOLS {
            return Err(WithholdError::TooManyTools);
        }
        let by_default = !self.all.contains(section);
        let e = self.tools.entry(id.to_owned()).or_default();
        e.withhold.remove(section);
        e.allow.remove(section);
        // An exception only when it differs from the choice made for every tool.
        match (share, by_default) {
            (true, false) => e.allow.insert(section),
            (false, true) => e.withhold.insert(section),
            _ => {}
        }
        if e.withhold.is_empty() && e.allow.is_empty() {
            self.tools.remove(id);
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        let tools: Map<String, Value> = self
            .tools
            .iter()
            .map(|(id, e)| {
                (
                    id.clone(),
                    json!({ "withhold": e.withhold.names(), "allow": e.allow.names() }),
                )
            })
            .collect();
        json!({ "all": self.all.names(), "tools": tools })
    }

    pub fn from_json(v: &Value) -> Option<Withheld> {
        let all = Sections::from_json(v.get("all")?)?;
        let mut tools = BTreeMap::new();
        for (id, e) in v.get("tools")?.as_object()? {
            let e = Exceptions {
                withhold: Sections::from_json(e.get("withhold")?)?,
                allow: Sections::from_json(e.get("allow")?)?,
            };
            if !(e.withhold.is_empty() && e.allow.is_empty()) && tools.len() < MAX_TOOLS {
                tools.insert(id.clone(), e);
            }
        }
        Some(Withheld { all, tools })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_command_wins_for_its_scope() {
        let mut w = Withheld::default();
        w.set(Section::Wifi, Some("a"), false).unwrap();
        assert_eq!(w.for_tool("a").names(), ["wifi"]);
        assert!(w.for_tool("b").is_empty());
        // Withheld from all, then shared with b alone.
        w.set(Section::Client, None, false).unwrap();
        w.set(Section::Client, Some("b"), true).unwrap();
        assert_eq!(w.for_tool("a").names(), ["wifi", "client"]);
        assert!(w.for_tool("b").is_empty());
        assert_eq!(w.for_tool("c").names(), ["client"]);
        // Allowing for every tool clears the exceptions about that section only.
        w.set(Section::Client, None, true).unwrap();
        assert_eq!(w.for_tool("a").names(), ["wifi"]);
        assert!(!w.tools.contains_key("b"));
        w.set(Section::Wifi, Some("a"), true).unwrap();
        assert_eq!(w, Withheld::default());
    }

    #[test]
    fn json_round_trip_and_bounds() {
        let mut w = Withheld::default();
        w.set(Section::Counters, None, false).unwrap();
        w.set(Section::Counters, Some("x"), true).unwrap();
        w.set(Section::Box, Some("y"), false).unwrap();
        assert_eq!(Withheld::from_json(&w.to_json()), Some(w.clone()));
        let newer = json!({"all": ["wifi", "future_section"], "tools": {}});
        assert_eq!(Withheld::from_json(&newer).unwrap().all.names(), ["wifi"]);
        assert_eq!(Withheld::from_json(&json!({"all": "wifi"})), None);
        let mut full = Withheld::default();
        for i in 0..MAX_TOOLS {
            full.set(Section::Wifi, Some(&format!("t{i}")), false)
                .unwrap();
        }
        assert_eq!(
            full.set(Section::Wifi, Some("one-more"), false),
            Err(WithholdError::TooManyTools)
        );
        // An existing entry can still change.
        full.set(Section::Box, Some("t0"), false).unwrap();
    }
}
