//! Startup-script generators: render an AutoScale config's template for one new VM.
//!
//! Implement [`ScriptGenerator`] and export it with
//! [`export_generator!`](crate::export_generator).

pub use crate::__bindings::generator::zonebroker::plugin::script_types::{
    RenderError, RenderErrorKind,
};
pub use crate::__bindings::generator::zonebroker::plugin::types::{Os, Pair};

/// The pair that names (comma-separated) the variables the host offers without their values:
/// secrets, which a VM fetches when it boots (`POST /api/v1/servers/bootstrap`) and which must
/// never be written into a script. When the host passes it, every rendered script must start
/// by fetching the server's variables (the check-in is refused before that), and render each
/// use of a named variable as code that reads the fetched value. Not a template variable.
pub const BOOT_SECRETS: &str = "zonebroker:boot-secrets";

/// The variables offered to a template, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Variables(pub Vec<Pair>);

impl Variables {
    /// The variables the VM fetches at boot instead (see [`BOOT_SECRETS`]), if the host
    /// asks for a bootstrap.
    pub fn boot_secrets(&self) -> Option<Vec<&str>> {
        self.get(BOOT_SECRETS)
            .map(|names| names.split(',').filter(|n| !n.is_empty()).collect())
    }

    /// The value of template variable `name`, if offered (the host's own instructions,
    /// named `zonebroker:...`, are not template variables).
    pub fn variable(&self, name: &str) -> Option<&str> {
        if name.starts_with("zonebroker:") {
            None
        } else {
            self.get(name)
        }
    }

    /// The value of `name`, if offered.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|pair| pair.name == name)
            .map(|pair| pair.value.as_str())
    }

    /// Variables from `(name, value)` pairs (handy in tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Variables(
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

/// A startup-script generator.
pub trait ScriptGenerator {
    /// Render `template` for `os`. Refer to problems by their position in `template`.
    fn render(os: Os, template: &str, variables: &Variables) -> Result<String, RenderError>;
}

/// Export a [`ScriptGenerator`] as this component's `script-generator` world.
#[macro_export]
macro_rules! export_generator {
    ($generator:ty) => {
        #[doc(hidden)]
        pub struct __ZonebrokerGeneratorExport;

        impl $crate::__bindings::generator::exports::zonebroker::plugin::generator::Guest
            for __ZonebrokerGeneratorExport
        {
            fn render(
                os: $crate::generator::Os,
                template: ::std::string::String,
                variables: ::std::vec::Vec<$crate::generator::Pair>,
            ) -> ::core::result::Result<::std::string::String, $crate::generator::RenderError>
            {
                <$generator as $crate::generator::ScriptGenerator>::render(
                    os,
                    &template,
                    &$crate::generator::Variables(variables),
                )
            }
        }

        // Native builds (unit tests) export nothing: only a component has these exports.
        #[cfg(target_arch = "wasm32")]
        $crate::__bindings::generator::__export_generator_world!(
            __ZonebrokerGeneratorExport with_types_in $crate::__bindings::generator
        );
    };
}
