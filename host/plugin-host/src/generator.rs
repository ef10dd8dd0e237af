//! Calling a script generator: render a startup-script template with its variables,
//! synchronously (callers run it off the async workers).

use zonebroker_core::domain::script::{Os, TemplateError};

use super::call::classify;
use super::error::CallError;
use super::kind::PluginKind;
use super::load::{Instantiator, LoadedPlugin};
use super::runtime::PluginRuntime;
use super::wit;

impl PluginRuntime {
    /// Render a startup-script template with a script-generator plugin. The outer error is
    /// the call's; the inner one is the template's, as the plugin reports it.
    pub fn render(
        &self,
        plugin: &LoadedPlugin,
        os: Os,
        template: &str,
        variables: &[(String, String)],
    ) -> Result<Result<String, TemplateError>, CallError> {
        let Instantiator::ScriptGenerator(pre) = &plugin.instance else {
            return Err(CallError::WrongKind {
                expected: PluginKind::ScriptGenerator,
                actual: plugin.kind,
            });
        };
        let limits = &self.limits_of(plugin);
        let mut store = self.new_store(limits);
        let variables: Vec<_> = variables
            .iter()
            .map(
                |(name, value)| wit::generator::zonebroker::plugin::types::Pair {
                    name: name.clone(),
                    value: value.clone(),
                },
            )
            .collect();
        let result = pre.instantiate(&mut store).and_then(|instance| {
            instance.zonebroker_plugin_generator().call_render(
                &mut store,
                os.into(),
                template,
                &variables,
            )
        });
        let output = store.data_mut().take_output();
        output.emit();
        match result {
            Ok(rendered) => Ok(rendered.map_err(TemplateError::from)),
            Err(error) => Err(classify(error, limits, &output)),
        }
    }
}
