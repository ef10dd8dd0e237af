//! The variables of a startup script, in one place: their names per OS, which are secret
//! (deferred to boot, never written into a script), and their values for a server,
//! computed from the server, its AutoScale config, the address VMs reach the broker at and
//! (for the script) its check-in token.

use super::config::{AutoScaleConfig, CredentialType};
use super::server::Server;
use crate::domain::ldap::dns_domain;
use crate::domain::script::Os;

/// A variable a startup-script template may use (`{name}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variable {
    /// The single-use password of the server's pre-created AD computer account. Secret.
    AdJoinCredential,
    /// The token the VM checks in with (`POST /servers/checkin`); only in the script.
    CheckinJwt,
    ConnectionUsername,
    /// Secret.
    ConnectionPassword,
    /// The directory's DNS domain when the config creates AD computer records.
    Domain,
    /// Windows only, per the seed.
    ServerId,
    /// Windows only, per the seed.
    ServerHostname,
    /// Where the VM reaches the broker: its zone's `upstream_auth_address`.
    UpstreamAuthAddress,
}

impl Variable {
    /// Its name in a template.
    pub const fn name(self) -> &'static str {
        match self {
            Variable::AdJoinCredential => "ad_join_credential",
            Variable::CheckinJwt => "checkin_jwt",
            Variable::ConnectionUsername => "connection_username",
            Variable::ConnectionPassword => "connection_password",
            Variable::Domain => "domain",
            Variable::ServerId => "server_id",
            Variable::ServerHostname => "server_hostname",
            Variable::UpstreamAuthAddress => "upstream_auth_address",
        }
    }

    /// Whether its value never goes into a startup script: a VM reads user data that any
    /// user of it may read too, so it fetches these at boot (`POST /servers/bootstrap`).
    pub const fn is_secret(self) -> bool {
        matches!(
            self,
            Variable::AdJoinCredential | Variable::ConnectionPassword
        )
    }

    /// The variables a startup script of `os` may use, in the order generators get them.
    pub fn of(os: Os) -> &'static [Variable] {
        use Variable::*;
        match os {
            Os::Windows => &[
                AdJoinCredential,
                CheckinJwt,
                ConnectionUsername,
                ConnectionPassword,
                Domain,
                ServerId,
                ServerHostname,
                UpstreamAuthAddress,
            ],
            Os::Linux => &[
                AdJoinCredential,
                CheckinJwt,
                ConnectionUsername,
                ConnectionPassword,
                Domain,
                UpstreamAuthAddress,
            ],
        }
    }
}

/// The names of the variables a startup script of `os` may use.
pub fn names(os: Os) -> Vec<&'static str> {
    Variable::of(os).iter().map(|v| v.name()).collect()
}

/// The names of the secret variables (see [`Variable::is_secret`]).
pub const SECRET_VARIABLES: &[&str] = &[
    Variable::AdJoinCredential.name(),
    Variable::ConnectionPassword.name(),
];

/// The extra pair the host passes to a script generator, naming (comma-separated) the
/// variables it offers without their values: the generator renders each use of one as code
/// that fetches the value at boot, and starts every script with that fetch (the bootstrap
/// step a check-in requires). Its name is not a template variable.
pub const BOOT_SECRETS_PAIR: &str = "zonebroker:boot-secrets";

/// What a script generator is given for `os`: every variable of the OS, the secret ones
/// with empty values and named in [`BOOT_SECRETS_PAIR`], so that no secret can reach a
/// script whatever the template or the generator does.
fn render_pairs(os: Os, value: impl Fn(Variable) -> String) -> Vec<(String, String)> {
    let variables = Variable::of(os);
    let mut pairs: Vec<(String, String)> = variables
        .iter()
        .map(|&variable| {
            let value = if variable.is_secret() {
                String::new()
            } else {
                value(variable)
            };
            (variable.name().to_string(), value)
        })
        .collect();
    let deferred: Vec<&str> = variables
        .iter()
        .filter(|variable| variable.is_secret())
        .map(|variable| variable.name())
        .collect();
    pairs.push((BOOT_SECRETS_PAIR.to_string(), deferred.join(",")));
    pairs
}

/// The values a template is rendered with when a config is saved, for every variable of
/// `os`. Values an operator supplies (the user name) get characters every shell interprets,
/// so a template that uses them unquoted is refused at save time rather than at boot;
/// values the broker makes (token, ids, addresses) have their real shape, which no shell
/// interprets. Secrets are offered as at a real render: fetched at boot.
pub fn sample_variables(os: Os) -> Vec<(String, String)> {
    render_pairs(os, |variable| match variable {
        Variable::CheckinJwt => "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzYW1wbGUifQ.c2lnbmF0dXJl".into(),
        Variable::Domain => "corp.example.com".into(),
        Variable::ServerId => "00000000-0000-4000-8000-000000000000".into(),
        Variable::ServerHostname => "zb-00000000".into(),
        Variable::UpstreamAuthAddress => "broker.example.com:443".into(),
        other => format!("sample {} 'with' \"quotes\" $(x) `y` ;&|<>", other.name()),
    })
}

/// How a server joins Active Directory: its pre-created computer account's single-use
/// password (set when the VM fetches it) and the directory's DNS domain.
pub struct AdJoin {
    pub password: crate::domain::secret::Secret,
    pub domain: String,
}

/// The DNS domain of the directory `config` creates computer records in (from its OU's DN).
pub fn directory_domain(config: &AutoScaleConfig) -> Option<String> {
    config.ad_computer_ou_dn.as_deref().and_then(dns_domain)
}

/// What the values of a server's variables are computed from.
struct Inputs<'a> {
    config: &'a AutoScaleConfig,
    server: &'a Server,
    upstream_auth_address: &'a str,
    checkin_jwt: Option<&'a str>,
    ad_join: Option<&'a AdJoin>,
}

impl Inputs<'_> {
    fn value(&self, variable: Variable) -> String {
        let config = self.config;
        let static_credential = |field: Option<&String>| match config.credential_type {
            CredentialType::Static => field.cloned().unwrap_or_default(),
            CredentialType::Sso => String::new(),
        };
        match variable {
            Variable::AdJoinCredential => self
                .ad_join
                .map(|join| join.password.expose().clone())
                .unwrap_or_default(),
            Variable::CheckinJwt => self.checkin_jwt.unwrap_or_default().to_string(),
            Variable::ConnectionUsername => static_credential(config.connection_username.as_ref()),
            Variable::ConnectionPassword => static_credential(
                config
                    .connection_password
                    .as_ref()
                    .map(|password| password.expose()),
            ),
            Variable::Domain => match self.ad_join {
                Some(join) => join.domain.clone(),
                None if config.create_ad_computer_record => {
                    directory_domain(config).unwrap_or_default()
                }
                None => String::new(),
            },
            Variable::ServerId => self.server.id.to_string(),
            Variable::ServerHostname => self.server.hostname.clone(),
            Variable::UpstreamAuthAddress => self.upstream_auth_address.to_string(),
        }
    }
}

/// What a script generator renders `server`'s startup script with: the non-secret
/// variables of its OS with their values (the check-in token among them), the secret ones
/// deferred to boot (see [`render_pairs`]).
pub fn script_values(
    config: &AutoScaleConfig,
    server: &Server,
    checkin_jwt: &str,
    upstream_auth_address: &str,
) -> Vec<(String, String)> {
    let inputs = Inputs {
        config,
        server,
        upstream_auth_address,
        checkin_jwt: Some(checkin_jwt),
        ad_join: None,
    };
    render_pairs(config.os, |variable| inputs.value(variable))
}

/// What `POST /servers/bootstrap` answers a booting VM: every variable of its OS (secrets
/// included, the check-in token left out: the VM has it). `ad_join_credential` and `domain`
/// are empty unless the config creates AD computer records.
pub fn server_variables(
    config: &AutoScaleConfig,
    server: &Server,
    upstream_auth_address: &str,
    ad_join: Option<&AdJoin>,
) -> Vec<(String, String)> {
    let inputs = Inputs {
        config,
        server,
        upstream_auth_address,
        checkin_jwt: None,
        ad_join,
    };
    Variable::of(config.os)
        .iter()
        .filter(|&&variable| variable != Variable::CheckinJwt)
        .map(|&variable| (variable.name().to_string(), inputs.value(variable)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::autoscale::fixtures::{a_server, config};

    #[test]
    fn each_os_has_its_variables_and_only_the_secret_ones_are_secret() {
        assert_eq!(names(Os::Linux).len(), 6);
        assert!(names(Os::Windows).contains(&"server_hostname"));
        assert_eq!(
            SECRET_VARIABLES,
            ["ad_join_credential", "connection_password"]
        );
    }

    fn get(values: &[(String, String)], name: &str) -> Option<String> {
        values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn scripts_get_no_secret_only_its_name_deferred_to_boot() {
        let config = config(4, 4);
        let server = a_server();
        let linux = script_values(&config, &server, "tok", "broker:443");
        assert_eq!(get(&linux, "checkin_jwt").as_deref(), Some("tok"));
        assert_eq!(get(&linux, "connection_username").as_deref(), Some("kasm"));
        assert_eq!(
            get(&linux, "connection_password").as_deref(),
            Some(""),
            "offered, without its value"
        );
        assert_eq!(
            get(&linux, BOOT_SECRETS_PAIR).as_deref(),
            Some("ad_join_credential,connection_password")
        );
        assert!(
            !linux.iter().any(|(_, v)| v.contains("secret")),
            "{linux:?}"
        );
        assert_eq!(
            get(&linux, "upstream_auth_address").as_deref(),
            Some("broker:443")
        );
        assert_eq!(get(&linux, "server_id"), None, "Windows only, per the seed");
        let samples = sample_variables(Os::Windows);
        assert_eq!(get(&samples, "connection_password").as_deref(), Some(""));
        assert!(
            get(&samples, "connection_username")
                .unwrap()
                .contains("$(x)")
        );
    }

    #[test]
    fn the_bootstrap_answers_every_variable_of_the_os() {
        let config = config(4, 4);
        let server = a_server();
        let linux = server_variables(&config, &server, "broker:443", None);
        assert_eq!(
            get(&linux, "connection_password").as_deref(),
            Some("secret")
        );
        assert_eq!(get(&linux, "checkin_jwt"), None, "the VM has it");
        assert_eq!(get(&linux, "server_id"), None, "Windows only, per the seed");
        let windows = AutoScaleConfig {
            os: Os::Windows,
            credential_type: CredentialType::Sso,
            ..config
        };
        let join = AdJoin {
            password: "pw".into(),
            domain: "example.test".into(),
        };
        let values = server_variables(&windows, &server, "broker:443", Some(&join));
        assert_eq!(get(&values, "ad_join_credential").as_deref(), Some("pw"));
        assert_eq!(get(&values, "domain").as_deref(), Some("example.test"));
        assert_eq!(
            get(&values, "server_id").as_deref(),
            Some("00000000-0000-0000-0000-000000000007")
        );
        assert_eq!(
            get(&values, "server_hostname").as_deref(),
            Some("zb-00000000")
        );
        assert_eq!(
            get(&values, "connection_password").as_deref(),
            Some(""),
            "SSO"
        );
    }
}
