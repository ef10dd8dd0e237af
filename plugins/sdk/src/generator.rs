//! Startup-script generators: render an AutoScale config's template for one new VM.
//!
//! Implement [`ScriptGenerator`] and export it with
//! [`export_generator!`](crate::export_generator).

pub use crate::__bindings::generator::zonebroker::plugin::script_types::{
    RenderError, RenderErrorKind,
};
pub use crate::__bindings::generator::zonebroker::plugin::types::{Os, Pair};

/// The variables offered to a template, by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Variables(pub Vec<Pair>);

impl Variables {
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
