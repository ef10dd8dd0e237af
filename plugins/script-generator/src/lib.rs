//! The built-in startup-script generator (`default-generator`): Kasm's templates.
//!
//! - `{name}` is replaced by the variable `name`; `{{` and `}}` are literal braces (so a bash
//!   `${HOME}` is written `${{HOME}}`).
//! - A value must never break out of the script. `{name|sh}` quotes it for bash (single
//!   quotes, `'` written `'\''`), `{name|ps}` for PowerShell (single quotes, every kind of
//!   single quote doubled), `{name|b64}` writes it in base64.
//! - Unquoted, `{name}` is allowed only for values made of characters no shell interprets:
//!   letters, digits and `._:/-` (and, for Linux, `@+=,` too). Any other value is refused
//!   with the variable's position: quote it with a filter.
//! - A name the host does not offer for the OS, a filter that does not exist, or a lone brace
//!   is an error at its position (line and column).
//! - Secrets (the variables the host names in `zonebroker:boot-secrets`) are never written
//!   into a script: the rendered script starts by fetching the server's variables from the
//!   broker with its check-in token (`POST /api/v1/servers/bootstrap`), and `{name|sh}`
//!   becomes `"$(zb_variable name)"` (bash), `{name|ps}` becomes `(Get-ZbVariable 'name')`
//!   (PowerShell), `{name|b64}` the same in base64. A secret used unquoted is refused.

pub mod template;

use zonebroker_plugin_sdk::generator::{Os, RenderError, ScriptGenerator, Variables};

pub struct DefaultGenerator;

impl ScriptGenerator for DefaultGenerator {
    fn render(os: Os, template: &str, variables: &Variables) -> Result<String, RenderError> {
        let shell = match os {
            Os::Linux => template::Shell::Bash,
            Os::Windows => template::Shell::PowerShell,
        };
        // A script that must fetch its secrets first has to be a script: cloud-init YAML and
        // cmd batch user data cannot run the bootstrap step before their own.
        let not_a_script = match os {
            Os::Linux => "#cloud-config",
            Os::Windows => "<script>",
        };
        if variables.boot_secrets().is_some() && template.trim_start().starts_with(not_a_script) {
            return Err(RenderError {
                kind: zonebroker_plugin_sdk::generator::RenderErrorKind::UnsafeValue,
                offset: 0,
                line: 1,
                column: 1,
                message: format!(
                    "`{not_a_script}` user data cannot fetch the server's secrets before it runs: write the template as a {} script",
                    match os {
                        Os::Linux => "shell (`#!/bin/bash`)",
                        Os::Windows => "PowerShell",
                    }
                ),
            });
        }
        let boot = variables.boot_secrets().map(|secrets| template::Boot {
            secrets,
            checkin_jwt: variables.variable("checkin_jwt").unwrap_or_default(),
            broker: variables
                .variable("upstream_auth_address")
                .unwrap_or_default(),
        });
        template::render(
            shell,
            template,
            |name| variables.variable(name),
            boot.as_ref(),
        )
        .map_err(|e| RenderError {
            kind: e.kind,
            offset: e.offset as u32,
            line: e.line,
            column: e.column,
            message: e.message,
        })
    }
}

zonebroker_plugin_sdk::export_generator!(DefaultGenerator);

#[cfg(test)]
mod tests {
    use super::*;
    use zonebroker_plugin_sdk::generator::BOOT_SECRETS;

    #[test]
    fn user_data_that_is_not_a_script_cannot_fetch_secrets_first() {
        let variables = Variables::from_pairs([
            ("checkin_jwt", "t"),
            ("upstream_auth_address", "broker:443"),
            (BOOT_SECRETS, "connection_password"),
        ]);
        for (os, template) in [
            (Os::Linux, "#cloud-config\nruncmd: [reboot]\n"),
            (Os::Windows, "<script>\necho hi\n</script>"),
        ] {
            let error = DefaultGenerator::render(os, template, &variables).unwrap_err();
            assert_eq!((error.line, error.column), (1, 1), "{}", error.message);
        }
        // Without the host's request for a bootstrap (a plain render), they render.
        let plain = Variables::from_pairs([("checkin_jwt", "t")]);
        assert!(DefaultGenerator::render(Os::Linux, "#cloud-config\n", &plain).is_ok());
        assert!(
            DefaultGenerator::render(Os::Linux, "#!/bin/bash\necho {checkin_jwt}", &variables)
                .unwrap()
                .contains("zb_variable()")
        );
    }
}
