//! Plugins as the broker records them: kinds, versions (content-addressed) and the history of
//! which version was active when.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a plugin is for; detected from the interface its component exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// World `strategy`: ranks placement candidates.
    Strategy,
    /// World `vm-provider`: creates and destroys VMs.
    VmProvider,
    /// World `script-generator`: renders startup scripts.
    ScriptGenerator,
}

impl PluginKind {
    pub const ALL: [PluginKind; 3] = [
        PluginKind::Strategy,
        PluginKind::VmProvider,
        PluginKind::ScriptGenerator,
    ];

    /// The kind's name, as in the API and the WIT world.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Strategy => "strategy",
            PluginKind::VmProvider => "vm-provider",
            PluginKind::ScriptGenerator => "script-generator",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One uploaded version of a plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersion {
    /// The sha256 of the component, in hex: the version's identity.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// Unix milliseconds.
    pub uploaded_at_ms: u64,
    /// What this version's calls may use, where it differs from its kind's defaults.
    #[serde(default, skip_serializing_if = "PluginLimits::is_default")]
    pub limits: PluginLimits,
}

/// Limits of one plugin's calls that differ from its kind's defaults (an interpreter needs
/// more memory, fuel and time than a Rust strategy). Each is bounded by a server-wide
/// maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// The most linear memory, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub memory_bytes: Option<u64>,
    /// The CPU budget, in fuel units (about one per wasm instruction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub fuel: Option<u64>,
    /// The wall-clock deadline of a call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub deadline_ms: Option<u64>,
}

impl PluginLimits {
    pub fn is_default(&self) -> bool {
        *self == PluginLimits::default()
    }

    /// These limits, with `newer`'s where it sets one.
    pub fn overridden_by(self, newer: PluginLimits) -> PluginLimits {
        PluginLimits {
            memory_bytes: newer.memory_bytes.or(self.memory_bytes),
            fuel: newer.fuel.or(self.fuel),
            deadline_ms: newer.deadline_ms.or(self.deadline_ms),
        }
    }
}

/// One change of the active version (an activation or a rollback).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Who asked (the admin credential and the client address).
    pub actor: String,
    /// The version active before, if any.
    pub from: Option<String>,
    /// The version activated.
    pub to: String,
}

/// An uploaded plugin: its versions, which one is active and how that came to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    pub kind: PluginKind,
    /// The active version's sha256; `None` until one is activated.
    pub active: Option<String>,
    /// Oldest first.
    pub versions: Vec<PluginVersion>,
    /// Oldest first.
    pub history: Vec<Activation>,
}

impl PluginRecord {
    pub fn version(&self, sha256: &str) -> Option<&PluginVersion> {
        self.versions.iter().find(|v| v.sha256 == sha256)
    }

    /// Set version `sha256`'s limits; answers whether they changed.
    pub fn set_limits(&mut self, sha256: &str, limits: PluginLimits) -> bool {
        match self.versions.iter_mut().find(|v| v.sha256 == sha256) {
            Some(version) if version.limits != limits => {
                version.limits = limits;
                true
            }
            _ => false,
        }
    }

    /// Record that `to` became active, by `actor` at `at_ms`.
    pub fn activate(&mut self, to: &str, actor: &str, at_ms: u64) {
        let from = self.active.replace(to.to_string());
        self.history.push(Activation {
            at_ms,
            actor: actor.to_string(),
            from,
            to: to.to_string(),
        });
    }

    /// The version that was active before the current one (a rollback's target).
    pub fn previous(&self) -> Option<&str> {
        self.history.last().and_then(|a| a.from.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_record_where_they_came_from() {
        let mut record = PluginRecord {
            name: "spread".into(),
            kind: PluginKind::Strategy,
            active: None,
            versions: Vec::new(),
            history: Vec::new(),
        };
        assert_eq!(record.previous(), None);
        record.activate("aaa", "admin", 1);
        record.activate("bbb", "admin", 2);
        assert_eq!(record.active.as_deref(), Some("bbb"));
        assert_eq!(record.previous(), Some("aaa"));
        assert_eq!(record.history[0].from, None);
        assert_eq!(record.history[1].from.as_deref(), Some("aaa"));
        assert_eq!(PluginKind::VmProvider.to_string(), "vm-provider");
    }
}
