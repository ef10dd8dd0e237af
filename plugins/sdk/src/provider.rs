//! VM-provider adapters: create, inspect, list and destroy VMs in a cloud or hypervisor.
//!
//! Implement [`VmProvider`] and export it with [`export_provider!`](crate::export_provider).
//! A provider reaches its cloud only through `wasi:http/outgoing-handler`, and only the
//! origins its [`VmProvider::validate`] answered for the settings in use.

pub use crate::__bindings::provider::zonebroker::plugin::provider_types::{
    ProviderError, ProviderInfo, SettingError, SettingSpec, ValidatedSettings, Vm, VmSpec, VmState,
};
pub use crate::__bindings::provider::zonebroker::plugin::types::{Os, Pair};

/// A provider config's settings, by name (secrets included: never log them).
#[derive(Clone, Debug, Default)]
pub struct Settings(pub Vec<Pair>);

impl Settings {
    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|pair| pair.name == name)
            .map(|pair| pair.value.as_str())
    }

    /// The value of `name`, or an `invalid-config` error naming it.
    pub fn require(&self, name: &str) -> Result<&str, ProviderError> {
        match self.get(name) {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(ProviderError::InvalidConfig(SettingError {
                setting: name.to_string(),
                message: format!("`{name}` is required"),
            })),
        }
    }

    /// Settings from `(name, value)` pairs (handy in tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Settings(
            pairs
                .into_iter()
                .map(|(name, value)| Pair {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect(),
        )
    }
}

/// A VM-provider adapter. Stateless: every call gets the settings it needs.
pub trait VmProvider {
    /// What this provider is and which settings it takes. No network calls.
    fn describe() -> ProviderInfo;
    /// Check settings; answer the origins the host must allow and the instance cap.
    fn validate(settings: &Settings) -> Result<ValidatedSettings, ProviderError>;
    /// Create one VM, tagged with `spec.tags`.
    fn create_vm(settings: &Settings, spec: VmSpec) -> Result<Vm, ProviderError>;
    /// The VM with this provider id.
    fn get_vm(settings: &Settings, instance_id: &str) -> Result<Vm, ProviderError>;
    /// Destroy a VM; a VM already gone is not an error.
    fn destroy_vm(settings: &Settings, instance_id: &str) -> Result<(), ProviderError>;
    /// Every live VM carrying the tag `tag`.
    fn list_vms(settings: &Settings, tag: &Pair) -> Result<Vec<Vm>, ProviderError>;
}

/// Export a [`VmProvider`] as this component's `vm-provider` world.
#[macro_export]
macro_rules! export_provider {
    ($provider:ty) => {
        #[doc(hidden)]
        pub struct __ZonebrokerProviderExport;

        impl $crate::__bindings::provider::exports::zonebroker::plugin::provider::Guest
            for __ZonebrokerProviderExport
        {
            fn describe() -> $crate::provider::ProviderInfo {
                <$provider as $crate::provider::VmProvider>::describe()
            }
            fn validate(
                settings: ::std::vec::Vec<$crate::provider::Pair>,
            ) -> ::core::result::Result<$crate::provider::ValidatedSettings, $crate::provider::ProviderError> {
                <$provider as $crate::provider::VmProvider>::validate(&$crate::provider::Settings(settings))
            }
            fn create_vm(
                settings: ::std::vec::Vec<$crate::provider::Pair>,
                spec: $crate::provider::VmSpec,
            ) -> ::core::result::Result<$crate::provider::Vm, $crate::provider::ProviderError> {
                <$provider as $crate::provider::VmProvider>::create_vm(&$crate::provider::Settings(settings), spec)
            }
            fn get_vm(
                settings: ::std::vec::Vec<$crate::provider::Pair>,
                instance_id: ::std::string::String,
            ) -> ::core::result::Result<$crate::provider::Vm, $crate::provider::ProviderError> {
                <$provider as $crate::provider::VmProvider>::get_vm(&$crate::provider::Settings(settings), &instance_id)
            }
            fn destroy_vm(
                settings: ::std::vec::Vec<$crate::provider::Pair>,
                instance_id: ::std::string::String,
            ) -> ::core::result::Result<(), $crate::provider::ProviderError> {
                <$provider as $crate::provider::VmProvider>::destroy_vm(&$crate::provider::Settings(settings), &instance_id)
            }
            fn list_vms(
                settings: ::std::vec::Vec<$crate::provider::Pair>,
                tag: $crate::provider::Pair,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::provider::Vm>, $crate::provider::ProviderError> {
                <$provider as $crate::provider::VmProvider>::list_vms(&$crate::provider::Settings(settings), &tag)
            }
        }

        // Native builds (unit tests) export nothing: only a component has these exports.
        #[cfg(target_arch = "wasm32")]
        $crate::__bindings::provider::__export_provider_world!(
            __ZonebrokerProviderExport with_types_in $crate::__bindings::provider
        );
    };
}
