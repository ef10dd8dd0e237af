//! A VM provider config's settings: text by name, some of them secret.
//!
//! Which settings are secret is the provider plugin's word (its `describe`), known once the
//! config is checked; from then on a secret setting holds a [`Secret`]: it is left out
//! wherever the config is shown (not even its name as `null`), written as is in the store,
//! and given to the plugin with the rest.

use std::collections::{BTreeMap, BTreeSet};

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::secret::{self, Secret};

/// A provider config's settings, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderSettings(BTreeMap<String, Setting>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Setting {
    Plain(String),
    Secret(Secret),
}

impl Setting {
    fn value(&self) -> &str {
        match self {
            Setting::Plain(text) => text,
            Setting::Secret(secret) => secret.expose(),
        }
    }
}

impl ProviderSettings {
    /// The value of setting `name`, secret or not.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(Setting::value)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The names of the secret settings it holds.
    pub fn secret_names(&self) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|(_, setting)| matches!(setting, Setting::Secret(_)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The settings that are not secret, with their values.
    pub fn plain(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().filter_map(|(name, setting)| match setting {
            Setting::Plain(text) => Some((name.as_str(), text.as_str())),
            Setting::Secret(_) => None,
        })
    }

    /// Make the settings named in `secret` secret, and the others plain.
    pub fn mark_secret(&mut self, secret: &BTreeSet<String>) {
        for (name, setting) in &mut self.0 {
            let value = setting.value().to_string();
            *setting = if secret.contains(name) {
                Setting::Secret(Secret::new(value))
            } else {
                Setting::Plain(value)
            };
        }
    }

    /// Every setting with its value, as the plugin takes them.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(name, setting)| (name.clone(), setting.value().to_string()))
            .collect()
    }
}

/// Plain settings (secrecy comes from the plugin: [`ProviderSettings::mark_secret`]).
impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for ProviderSettings {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Self {
        ProviderSettings(
            pairs
                .into_iter()
                .map(|(name, value)| (name.into(), Setting::Plain(value.into())))
                .collect(),
        )
    }
}

/// A map of the settings shown: secret ones only inside [`secret::revealed`] (the store).
impl Serialize for ProviderSettings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let revealed = secret::is_revealed();
        let shown: Vec<(&String, &str)> = self
            .0
            .iter()
            .filter(|(_, setting)| revealed || matches!(setting, Setting::Plain(_)))
            .map(|(name, setting)| (name, setting.value()))
            .collect();
        let mut map = serializer.serialize_map(Some(shown.len()))?;
        for (name, value) in shown {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Text, a number or a boolean (kept as its text) by name, every one plain.
impl<'de> Deserialize<'de> for ProviderSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let values = BTreeMap::<String, super::SettingValue>::deserialize(deserializer)?;
        Ok(values
            .into_iter()
            .map(|(name, value)| (name, value.into_text()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_secret_setting_is_shown_nowhere_but_kept_and_given_to_the_plugin() {
        let mut settings: ProviderSettings = serde_json::from_value(
            json!({"region": "us-east-1", "secret_access_key": "hunter2", "max": 20}),
        )
        .unwrap();
        settings.mark_secret(&BTreeSet::from(["secret_access_key".to_string()]));
        assert_eq!(
            serde_json::to_value(&settings).unwrap(),
            json!({"region": "us-east-1", "max": "20"}),
            "shown: the secret is left out, name and all"
        );
        assert!(!format!("{settings:?}").contains("hunter2"));
        let stored = secret::revealed(|| serde_json::to_string(&settings)).unwrap();
        assert!(stored.contains("hunter2"), "stored as is: {stored}");
        assert_eq!(settings.get("secret_access_key"), Some("hunter2"));
        assert_eq!(
            settings.secret_names(),
            BTreeSet::from(["secret_access_key".to_string()])
        );
        assert_eq!(
            settings.plain().collect::<Vec<_>>(),
            [("max", "20"), ("region", "us-east-1")]
        );
        assert_eq!(settings.pairs().len(), 3);
        // Read back from the store, every setting is plain until the plugin's word marks it.
        let read: ProviderSettings = serde_json::from_str(&stored).unwrap();
        assert!(read.secret_names().is_empty());
    }
}
