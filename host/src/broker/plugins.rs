//! Plugin operations: upload (validate, smoke-test, store), activate and roll back (an atomic
//! swap in the registry, recorded with who and when), delete; and loading the active versions
//! at start-up from compiled artifacts kept in the store.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use super::{Broker, BrokerError, now_ms};
use crate::domain::names;
use crate::domain::plugin::{PluginKind, PluginLimits, PluginRecord, PluginVersion};
use crate::domain::timestamp::rfc3339;
use crate::domain::validation::FieldError;
use crate::plugin_cache::StoredArtifacts;
use crate::plugins::{
    ArtifactCache as _, CallError, Compiled, LoadError, LoadedPlugin, PendingArtifacts,
};

/// Why an upload was refused (each a 4xx for the uploader).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the smoke call failed: {0}")]
    Smoke(CallError),
    #[error("plugin `{name}` is a {existing} plugin; this component is a {offered} plugin")]
    KindMismatch {
        name: String,
        existing: PluginKind,
        offered: PluginKind,
    },
}

/// A plugin as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PluginView {
    pub name: String,
    pub kind: PluginKind,
    /// Shipped inside the binary: cannot be replaced or deleted.
    pub builtin: bool,
    /// The sha256 of the active version; `null` until one is activated.
    pub active_version: Option<String>,
    /// Oldest first (empty for built-ins).
    pub versions: Vec<VersionView>,
    /// Every activation and rollback, oldest first.
    pub history: Vec<ActivationView>,
    /// What uses the plugin (it cannot be deleted while anything does).
    pub used_by: UsedBy,
}

/// One version of a plugin.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct VersionView {
    /// The sha256 of the component.
    pub version: String,
    /// Bytes.
    pub size: u64,
    pub uploaded_at: String,
    pub active: bool,
    /// Where this version's calls differ from its kind's default limits.
    pub limits: PluginLimits,
}

/// One activation or rollback.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ActivationView {
    pub at: String,
    /// Who asked: the credential and the client's address.
    pub actor: String,
    pub from: Option<String>,
    pub to: String,
}

/// What refers to a plugin.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct UsedBy {
    /// Zones whose load-balancing (or shadow) strategy it is.
    pub zones: Vec<String>,
    /// VM provider configs whose provider it is.
    pub provider_configs: Vec<String>,
    /// AutoScale configs whose script generator it is.
    pub autoscale_configs: Vec<String>,
}

impl UsedBy {
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
            && self.provider_configs.is_empty()
            && self.autoscale_configs.is_empty()
    }

    /// Every user, for an error message: `zone(s) a, b; provider config(s) c`.
    pub fn describe(&self) -> String {
        [
            ("zone(s)", &self.zones),
            ("VM provider config(s)", &self.provider_configs),
            ("AutoScale config(s)", &self.autoscale_configs),
        ]
        .into_iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(kind, names)| format!("{kind} {}", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
    }
}

/// The answer to an upload.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UploadView {
    pub name: String,
    pub kind: PluginKind,
    /// The sha256 of the component.
    pub version: String,
    /// Bytes.
    pub size: u64,
    pub uploaded_at: String,
    /// Where this version's calls differ from its kind's default limits.
    pub limits: PluginLimits,
    /// Whether this version is now the active one.
    pub active: bool,
    /// False when these exact bytes were already a version of this plugin.
    pub created: bool,
}

impl Broker {
    /// At start-up: activate the active version of every uploaded plugin, from its compiled
    /// artifact when the store holds one. A version that no longer loads is logged and left
    /// inactive; the server still starts.
    pub(super) fn load_uploaded_plugins(&self) {
        let records: Vec<PluginRecord> = self.read().plugins.values().cloned().collect();
        for record in &records {
            self.load_active_version(record);
        }
    }

    /// Make `record`'s active version the registry's (loading it, from its compiled
    /// artifact when the store holds one), unless it already is; without an active version,
    /// take the plugin out of the registry. CPU work: call it off the async workers.
    pub(super) fn load_active_version(&self, record: &PluginRecord) {
        let Some(active) = &record.active else {
            self.registry.remove(&record.name);
            return;
        };
        let limits = record.version(active).map(|v| v.limits).unwrap_or_default();
        if let Some((field, why)) = self.registry.runtime().config().max_limits.refusal(&limits) {
            tracing::warn!(
                plugin = record.name,
                version = short(active),
                "the version's {field} is capped at this server's maximum: {why}"
            );
        }
        if self.registry.get(&record.name).is_some_and(|slot| {
            slot.active().sha256() == active && slot.active().limits() == limits
        }) {
            return;
        }
        let loaded = self
            .store
            .blob(active)
            .map_err(|e| e.to_string())
            .and_then(|blob| blob.ok_or_else(|| "its component is missing".to_string()))
            .and_then(|bytes| {
                self.registry
                    .runtime()
                    .load_cached(&bytes, &StoredArtifacts(&self.store))
                    .map_err(|e| e.to_string())
            });
        match loaded {
            Ok((plugin, compiled)) => {
                let plugin = plugin.with_limits(limits);
                tracing::info!(
                    plugin = record.name,
                    version = short(active),
                    compiled = compiled == Compiled::Now,
                    "plugin loaded"
                );
                match self
                    .registry
                    .activate(&record.name, Arc::new(plugin), false)
                {
                    Ok(_) => self.metrics.plugin_active(&record.name, short(active)),
                    Err(error) => {
                        tracing::error!(plugin = record.name, "cannot activate: {error}")
                    }
                }
            }
            Err(error) => tracing::error!(
                plugin = record.name,
                "cannot load the active version: {error}"
            ),
        }
    }

    /// Every plugin: built-ins, then uploads, by name.
    pub fn plugins(&self) -> Vec<PluginView> {
        let inventory = self.read();
        let mut views: Vec<PluginView> = self
            .registry
            .list()
            .into_iter()
            .filter(|summary| summary.builtin)
            .map(|summary| PluginView {
                used_by: used_by(&inventory, &summary.name),
                name: summary.name,
                kind: summary.kind,
                builtin: true,
                active_version: Some(summary.active_version),
                versions: Vec::new(),
                history: Vec::new(),
            })
            .collect();
        views.extend(
            inventory
                .plugins
                .values()
                .map(|record| view(&inventory, record)),
        );
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    pub fn plugin(&self, name: &str) -> Result<PluginView, BrokerError> {
        self.plugins()
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| not_found(name))
    }

    /// Validate `bytes` (component, world, imports, a smoke call under the version's limits),
    /// store them as a version of plugin `name` with `limits` and, with `activate`, make it
    /// the active version. Uploading bytes that already are a version changes nothing but
    /// the limits it sets (and may activate it).
    pub async fn upload_plugin(
        self: &Arc<Self>,
        name: &str,
        bytes: Vec<u8>,
        limits: PluginLimits,
        activate: bool,
        actor: &str,
    ) -> Result<UploadView, BrokerError> {
        names::validate(name).map_err(|e| FieldError::new("name", e.to_string()))?;
        self.refuse_builtin(name)?;
        self.check_limits(&limits, "")?;
        // Compiling and the smoke call are CPU work: off the async workers. Nothing is
        // written until the upload is accepted: a compiled artifact waits in `pending`.
        let broker = self.clone();
        let name_owned = name.to_string();
        let (plugin, bytes, artifacts) = tokio::task::spawn_blocking(move || {
            let runtime = broker.registry.runtime();
            let cache = StoredArtifacts(&broker.store);
            let pending = PendingArtifacts::new(&cache);
            let (plugin, _) = runtime
                .load_upload(&bytes, &pending)
                .map_err(UploadError::Load)?;
            let limits = broker
                .stored_limits(name_owned.as_str(), plugin.sha256())
                .overridden_by(limits);
            let plugin = plugin.with_limits(limits);
            runtime.smoke_test(&plugin).map_err(UploadError::Smoke)?;
            Ok::<_, UploadError>((plugin, bytes, pending.into_pending()))
        })
        .await
        .map_err(|e| {
            BrokerError::internal("the upload's load and smoke call did not finish", e)
        })??;

        let plugin = Arc::new(plugin);
        let sha256 = plugin.sha256().to_string();
        let now = now_ms();
        let view = {
            let mut inventory = self.write();
            let mut record = match inventory.plugins.get(name) {
                Some(record) if record.kind != plugin.kind() => {
                    return Err(UploadError::KindMismatch {
                        name: name.to_string(),
                        existing: record.kind,
                        offered: plugin.kind(),
                    }
                    .into());
                }
                Some(record) => record.clone(),
                None => PluginRecord {
                    name: name.to_string(),
                    kind: plugin.kind(),
                    active: None,
                    versions: Vec::new(),
                    history: Vec::new(),
                },
            };
            let created = record.version(&sha256).is_none();
            for (key, artifact) in artifacts {
                StoredArtifacts(&self.store).put(&key, artifact);
            }
            if created {
                self.store.put_blob(&sha256, &bytes)?;
                record.versions.push(PluginVersion {
                    sha256: sha256.clone(),
                    size: bytes.len() as u64,
                    uploaded_at_ms: now,
                    limits: plugin.limits(),
                });
            }
            let limits_changed = record.set_limits(&sha256, plugin.limits());
            let is_active = record.active.as_deref() == Some(&sha256);
            if (activate && !is_active) || (is_active && limits_changed) {
                self.registry
                    .activate(name, plugin.clone(), false)
                    .map_err(|e| {
                        BrokerError::internal("the plugin registry refused the version", e)
                    })?;
                self.metrics.plugin_active(name, short(&sha256));
                if !is_active {
                    record.activate(&sha256, actor, now);
                }
            }
            self.store.put_plugin(&record)?;
            let version = record.version(&sha256).expect("just added").clone();
            let view = UploadView {
                name: name.to_string(),
                kind: record.kind,
                active: record.active.as_deref() == Some(&sha256),
                version: sha256.clone(),
                size: version.size,
                uploaded_at: rfc3339(version.uploaded_at_ms),
                limits: version.limits,
                created,
            };
            inventory.plugins.insert(name.to_string(), record);
            view
        };
        self.commit().await?;
        tracing::info!(
            plugin = name,
            version = short(&sha256),
            active = view.active,
            created = view.created,
            "plugin uploaded"
        );
        Ok(view)
    }

    /// Refuse limits over the server's maxima (or zero), naming the field.
    /// `field_prefix` is where the limits are in the request (`limits.` in a JSON body).
    fn check_limits(&self, limits: &PluginLimits, field_prefix: &str) -> Result<(), BrokerError> {
        match self.registry.runtime().config().max_limits.refusal(limits) {
            Some((field, why)) => {
                Err(FieldError::new(format!("{field_prefix}{field}"), why).into())
            }
            None => Ok(()),
        }
    }

    /// The limits stored for version `sha256` of plugin `name` (none if it is new).
    fn stored_limits(&self, name: &str, sha256: &str) -> PluginLimits {
        self.read()
            .plugins
            .get(name)
            .and_then(|record| record.version(sha256))
            .map(|version| version.limits)
            .unwrap_or_default()
    }

    /// Make `version` the active version of `name` (an activation, or a rollback to an older
    /// one), with `limits` set over the version's own. Calls in flight finish on the version
    /// (and limits) they started with.
    pub async fn activate_plugin(
        self: &Arc<Self>,
        name: &str,
        version: &str,
        limits: PluginLimits,
        actor: &str,
    ) -> Result<PluginView, BrokerError> {
        self.refuse_builtin(name)?;
        self.check_limits(&limits, "limits.")?;
        let new_limits = !limits.is_default();
        let limits = {
            let inventory = self.read();
            let record = inventory.plugins.get(name).ok_or_else(|| not_found(name))?;
            let Some(stored) = record.version(version) else {
                return Err(BrokerError::NotFound {
                    kind: "version",
                    key: format!("{name}@{version}"),
                });
            };
            stored.limits.overridden_by(limits)
        };
        let bytes = self
            .store
            .blob(version)?
            .ok_or_else(|| BrokerError::NotFound {
                kind: "component of version",
                key: version.to_string(),
            })?;
        let broker = self.clone();
        // New limits are smoke-tested as an upload is: a version whose calls cannot finish
        // under them would have every placement fall back.
        let plugin: LoadedPlugin = tokio::task::spawn_blocking(move || {
            let runtime = broker.registry.runtime();
            let (plugin, _) = runtime
                .load_cached(&bytes, &StoredArtifacts(&broker.store))
                .map_err(UploadError::Load)?;
            let plugin = plugin.with_limits(limits);
            if new_limits {
                runtime.smoke_test(&plugin).map_err(UploadError::Smoke)?;
            }
            Ok::<_, UploadError>(plugin)
        })
        .await
        .map_err(|e| BrokerError::internal("the version's load did not finish", e))??;
        {
            let mut inventory = self.write();
            let record = inventory
                .plugins
                .get_mut(name)
                .ok_or_else(|| not_found(name))?;
            let mut updated = record.clone();
            let limits_changed = updated.set_limits(version, limits);
            let is_active = record.active.as_deref() == Some(version);
            if !is_active || limits_changed {
                if !is_active {
                    updated.activate(version, actor, now_ms());
                }
                self.store.put_plugin(&updated)?;
                self.registry
                    .activate(name, Arc::new(plugin), false)
                    .map_err(|e| {
                        BrokerError::internal("the plugin registry refused the version", e)
                    })?;
                self.metrics.plugin_active(name, short(version));
                *record = updated;
            }
        }
        self.commit().await?;
        tracing::info!(
            plugin = name,
            version = &version[..version.len().min(12)],
            actor,
            "plugin version activated"
        );
        self.plugin(name)
    }

    /// Delete one version that is not active.
    pub async fn delete_plugin_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<(), BrokerError> {
        self.refuse_builtin(name)?;
        {
            let mut inventory = self.write();
            let record = inventory.plugins.get(name).ok_or_else(|| not_found(name))?;
            if record.version(version).is_none() {
                return Err(BrokerError::NotFound {
                    kind: "version",
                    key: format!("{name}@{version}"),
                });
            }
            if record.active.as_deref() == Some(version) {
                return Err(BrokerError::Conflict {
                    code: "version_active",
                    message: format!("version {version} is active; activate another first"),
                });
            }
            let mut updated = record.clone();
            updated.versions.retain(|v| v.sha256 != version);
            self.store.put_plugin(&updated)?;
            inventory.plugins.insert(name.to_string(), updated);
            if !blob_in_use(&inventory, version) {
                self.store.delete_blob(version)?;
            }
        }
        self.commit().await
    }

    /// Delete a plugin nothing uses, with all its versions.
    pub async fn delete_plugin(&self, name: &str) -> Result<(), BrokerError> {
        self.refuse_builtin(name)?;
        {
            let mut inventory = self.write();
            if !inventory.plugins.contains_key(name) {
                return Err(not_found(name));
            }
            let used = used_by(&inventory, name);
            if !used.is_empty() {
                return Err(BrokerError::Conflict {
                    code: "plugin_in_use",
                    message: format!("plugin `{name}` is used by {}", used.describe()),
                });
            }
            self.store.delete_plugin(name)?;
            let record = inventory.plugins.remove(name).expect("checked above");
            self.registry.remove(name);
            for version in &record.versions {
                if !blob_in_use(&inventory, &version.sha256) {
                    self.store.delete_blob(&version.sha256)?;
                }
            }
        }
        self.commit().await?;
        tracing::info!(plugin = name, "plugin deleted");
        Ok(())
    }

    fn refuse_builtin(&self, name: &str) -> Result<(), BrokerError> {
        match self.registry.get(name) {
            Some(slot) if slot.builtin() => Err(BrokerError::Conflict {
                code: "builtin_plugin",
                message: format!(
                    "`{name}` is built in: it cannot be changed or deleted (upload under another name)"
                ),
            }),
            _ => Ok(()),
        }
    }
}

fn view(inventory: &super::Inventory, record: &PluginRecord) -> PluginView {
    PluginView {
        name: record.name.clone(),
        kind: record.kind,
        builtin: false,
        active_version: record.active.clone(),
        versions: record
            .versions
            .iter()
            .map(|v| VersionView {
                limits: v.limits,
                version: v.sha256.clone(),
                size: v.size,
                uploaded_at: rfc3339(v.uploaded_at_ms),
                active: record.active.as_deref() == Some(v.sha256.as_str()),
            })
            .collect(),
        history: record
            .history
            .iter()
            .map(|a| ActivationView {
                at: rfc3339(a.at_ms),
                actor: a.actor.clone(),
                from: a.from.clone(),
                to: a.to.clone(),
            })
            .collect(),
        used_by: used_by(inventory, &record.name),
    }
}

fn used_by(inventory: &super::Inventory, name: &str) -> UsedBy {
    UsedBy {
        zones: inventory
            .zones
            .values()
            .filter(|zone| {
                zone.load_balance_strategy == name || zone.shadow_strategy.as_deref() == Some(name)
            })
            .map(|zone| zone.name.clone())
            .collect(),
        provider_configs: inventory
            .provider_configs
            .values()
            .filter(|stored| stored.config.provider == name)
            .map(|stored| stored.config.name.clone())
            .collect(),
        autoscale_configs: inventory
            .autoscale_configs
            .values()
            .filter(|config| config.script_generator == name)
            .map(|config| config.name.clone())
            .collect(),
    }
}

/// Whether any plugin still has a version with these bytes.
fn blob_in_use(inventory: &super::Inventory, sha256: &str) -> bool {
    inventory
        .plugins
        .values()
        .any(|r| r.version(sha256).is_some())
}

fn not_found(name: &str) -> BrokerError {
    BrokerError::NotFound {
        kind: "plugin",
        key: name.to_string(),
    }
}

/// A version as the API and the metrics name it: the first 12 hex digits of its sha256.
fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}
