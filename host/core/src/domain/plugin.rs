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
