//! Deployment zones: their settings, defaults and how a session's connection is addressed.

use serde::{Deserialize, Serialize};

use super::validation::{self, FieldError};

/// Replaced by the host name the request came in on (its `Host`, without the port).
pub const REQUEST_HOST: &str = "$request_host$";
/// The zone that always exists.
pub const DEFAULT_ZONE: &str = "default";
/// The strategy a zone uses unless told otherwise.
pub const DEFAULT_STRATEGY: &str = "least-load";

/// A deployment zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Zone {
    /// The zone's name (a DNS label).
    pub name: String,
    /// The origin domain sessions accept connections from. Default `$request_host$`.
    pub allow_origin_domain: String,
    /// The API server sessions authenticate against. Default `proxy`.
    pub upstream_auth_address: String,
    /// The strategy plugin that ranks agents. Default `least-load`.
    pub load_balance_strategy: String,
    /// A strategy run beside the zone's on every placement, off the request's path, whose
    /// first choice is compared with the zone's (`GET /zones/{name}/shadow`). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_strategy: Option<String>,
    /// Whether a request may be placed in another zone when this one is full. Default true.
    pub search_alternate_zones: bool,
    /// Whether connections go through a proxy rather than straight to the agent. Default true.
    pub proxy_connections: bool,
    /// The proxy's host. Default `$request_host$`.
    pub proxy_hostname: String,
    /// The base path of proxied connections. Default `/desktop`.
    pub proxy_path: String,
    /// The proxy's port; 0 means the port the request came in on. Default 0.
    pub proxy_port: u16,
}

impl Zone {
    /// A zone called `name` with every default.
    pub fn with_defaults(name: &str) -> Zone {
        Zone {
            name: name.to_string(),
            allow_origin_domain: REQUEST_HOST.to_string(),
            upstream_auth_address: "proxy".to_string(),
            load_balance_strategy: DEFAULT_STRATEGY.to_string(),
            shadow_strategy: None,
            search_alternate_zones: true,
            proxy_connections: true,
            proxy_hostname: REQUEST_HOST.to_string(),
            proxy_path: "/desktop".to_string(),
            proxy_port: 0,
        }
    }

    /// Check every field (whether the strategy is installed is the caller's question).
    pub fn validate(&self) -> Result<(), FieldError> {
        validation::name("name", &self.name)?;
        validation::name("load_balance_strategy", &self.load_balance_strategy)?;
        if let Some(shadow) = &self.shadow_strategy {
            validation::name("shadow_strategy", shadow)?;
        }
        host_or_request_host("allow_origin_domain", &self.allow_origin_domain)?;
        authority_or_request_host("upstream_auth_address", &self.upstream_auth_address)?;
        host_or_request_host("proxy_hostname", &self.proxy_hostname)?;
        let path = &self.proxy_path;
        if !path.starts_with('/')
            || path.len() > 256
            || !path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-._~".contains(c))
        {
            return Err(FieldError::new(
                "proxy_path",
                "a path starting with `/` of letters, digits and `/-._~`",
            ));
        }
        Ok(())
    }

    /// Apply `patch` to a copy and validate it.
    pub fn patched(&self, patch: ZonePatch) -> Result<Zone, FieldError> {
        let mut zone = self.clone();
        let ZonePatch {
            allow_origin_domain,
            upstream_auth_address,
            load_balance_strategy,
            shadow_strategy,
            search_alternate_zones,
            proxy_connections,
            proxy_hostname,
            proxy_path,
            proxy_port,
        } = patch;
        set(&mut zone.allow_origin_domain, allow_origin_domain);
        set(&mut zone.upstream_auth_address, upstream_auth_address);
        set(&mut zone.load_balance_strategy, load_balance_strategy);
        set(&mut zone.shadow_strategy, shadow_strategy);
        set(&mut zone.search_alternate_zones, search_alternate_zones);
        set(&mut zone.proxy_connections, proxy_connections);
        set(&mut zone.proxy_hostname, proxy_hostname);
        set(&mut zone.proxy_path, proxy_path);
        set(&mut zone.proxy_port, proxy_port);
        zone.validate()?;
        Ok(zone)
    }

    /// How a user reaches session `session_id` on an agent at `agent_address:agent_port`,
    /// for a request that arrived at `origin`.
    pub fn connection(
        &self,
        origin: &RequestOrigin,
        session_id: &str,
        agent_address: &str,
        agent_port: u16,
    ) -> Connection {
        let url = if self.proxy_connections {
            let path = self.proxy_path.trim_end_matches('/');
            format!(
                "https://{}{path}/{session_id}/",
                self.proxy_authority(origin)
            )
        } else {
            format!("https://{}/", host_port(agent_address, agent_port))
        };
        Connection {
            url,
            allow_origin_domain: origin.substitute(&self.allow_origin_domain),
            upstream_auth_address: origin.substitute(&self.upstream_auth_address),
        }
    }
}

impl Zone {
    /// `host:port` of the zone's proxy for a request that arrived at `origin`
    /// (`$request_host$` substituted; port 0 meaning the request's port).
    pub fn proxy_authority(&self, origin: &RequestOrigin) -> String {
        let port = match self.proxy_port {
            0 => origin.port_or_https(),
            port => port,
        };
        host_port(&origin.substitute(&self.proxy_hostname), port)
    }
}

/// `host:port`, an IPv6 host in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    format!("{}:{port}", bracket_ipv6(host))
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

/// A host name in which `$request_host$` may stand for (part of) the name.
fn host_or_request_host(field: &str, value: &str) -> Result<(), FieldError> {
    validation::host(field, &value.replace(REQUEST_HOST, "request-host")).map_err(|_| {
        FieldError::new(
            field,
            format!(
                "`{value}` is not a host name (`$request_host$` may stand for the request's host)"
            ),
        )
    })
}

/// `host[:port]` (as [`host_or_request_host`] takes the host): where VMs and agents reach
/// the broker, often behind a TLS proxy on another port (`broker.example.com:443`).
fn authority_or_request_host(field: &str, value: &str) -> Result<(), FieldError> {
    let (host, _) = validation::split_authority(field, value)?;
    host_or_request_host(field, host)
}

fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The body of `POST /zones`: a name, and any settings that differ from the defaults.
/// (Spelled out rather than flattened: serde cannot refuse unknown fields of a flattened
/// struct.)
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub name: String,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^([A-Za-z0-9._-]|\$request_host\$)+$", max_length = 200)
    )]
    pub allow_origin_domain: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^(([A-Za-z0-9._-]|\$request_host\$)+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$",
            max_length = 200
        )
    )]
    pub upstream_auth_address: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub load_balance_strategy: Option<String>,
    /// A strategy to run beside the zone's and compare with it.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub shadow_strategy: Option<String>,
    pub search_alternate_zones: Option<bool>,
    pub proxy_connections: Option<bool>,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^([A-Za-z0-9._-]|\$request_host\$)+$", max_length = 200)
    )]
    pub proxy_hostname: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^/[A-Za-z0-9/._~-]*$", max_length = 256)
    )]
    pub proxy_path: Option<String>,
    #[cfg_attr(feature = "openapi", schema(maximum = 65535))]
    pub proxy_port: Option<u16>,
}

impl ZoneSpec {
    /// The zone this spec describes, validated.
    pub fn into_zone(self) -> Result<Zone, FieldError> {
        validation::name("name", &self.name)?;
        let patch = ZonePatch {
            allow_origin_domain: self.allow_origin_domain,
            upstream_auth_address: self.upstream_auth_address,
            load_balance_strategy: self.load_balance_strategy,
            shadow_strategy: self.shadow_strategy.map(Some),
            search_alternate_zones: self.search_alternate_zones,
            proxy_connections: self.proxy_connections,
            proxy_hostname: self.proxy_hostname,
            proxy_path: self.proxy_path,
            proxy_port: self.proxy_port,
        };
        Zone::with_defaults(&self.name).patched(patch)
    }
}

/// The body of `PATCH /zones/{name}`: the settings to change.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ZonePatch {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^([A-Za-z0-9._-]|\$request_host\$)+$", max_length = 200)
    )]
    pub allow_origin_domain: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^(([A-Za-z0-9._-]|\$request_host\$)+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$",
            max_length = 200
        )
    )]
    pub upstream_auth_address: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub load_balance_strategy: Option<String>,
    /// A strategy to run beside the zone's and compare with it; `null` to stop.
    #[serde(default, deserialize_with = "validation::present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub shadow_strategy: Option<Option<String>>,
    pub search_alternate_zones: Option<bool>,
    pub proxy_connections: Option<bool>,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^([A-Za-z0-9._-]|\$request_host\$)+$", max_length = 200)
    )]
    pub proxy_hostname: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^/[A-Za-z0-9/._~-]*$", max_length = 256)
    )]
    pub proxy_path: Option<String>,
    #[cfg_attr(feature = "openapi", schema(maximum = 65535))]
    pub proxy_port: Option<u16>,
}

/// How the user's client connects to a session, with the settings the connection layer
/// enforces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Connection {
    /// Where the client connects.
    pub url: String,
    /// The origin the session accepts connections from.
    pub allow_origin_domain: String,
    /// Where the session authenticates the connection.
    pub upstream_auth_address: String,
}

/// The host and port a request arrived at, from its `Host` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestOrigin {
    pub host: String,
    pub port: Option<u16>,
}

impl RequestOrigin {
    /// Parse a `Host` header: `name`, `name:port`, `[v6]` or `[v6]:port`.
    pub fn from_host_header(value: &str) -> Option<RequestOrigin> {
        let value = value.trim();
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let (v6, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse().ok()?),
                None if after.is_empty() => None,
                None => return None,
            };
            (format!("[{v6}]"), port)
        } else {
            match value.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port.parse().ok()?)),
                None => (value.to_string(), None),
            }
        };
        validation::host("Host", &host).ok()?;
        Some(RequestOrigin { host, port })
    }

    /// The request's port, or 443 when it named none.
    pub fn port_or_https(&self) -> u16 {
        self.port.unwrap_or(443)
    }

    /// `template` with every `$request_host$` replaced by the request's host.
    pub fn substitute(&self, template: &str) -> String {
        template.replace(REQUEST_HOST, &self.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(host: &str) -> RequestOrigin {
        RequestOrigin::from_host_header(host).unwrap()
    }

    #[test]
    fn defaults_are_kasms() {
        let zone = Zone::with_defaults("east");
        assert_eq!(zone.allow_origin_domain, "$request_host$");
        assert_eq!(zone.upstream_auth_address, "proxy");
        assert_eq!(zone.load_balance_strategy, "least-load");
        assert!(zone.search_alternate_zones && zone.proxy_connections);
        assert_eq!(zone.proxy_hostname, "$request_host$");
        assert_eq!(zone.proxy_path, "/desktop");
        assert_eq!(zone.proxy_port, 0);
        assert_eq!(zone.validate(), Ok(()));
    }

    #[test]
    fn the_upstream_auth_address_may_name_a_port() {
        let with = |address: &str| Zone {
            upstream_auth_address: address.into(),
            ..Zone::with_defaults("east")
        };
        for good in [
            "broker.example.com:443",
            "broker.example.com",
            "$request_host$:8443",
            "[::1]:443",
            "10.0.0.1:8080",
        ] {
            assert_eq!(with(good).validate(), Ok(()), "{good}");
        }
        for bad in [
            "broker:0",
            "broker:99999",
            "broker:https",
            "broker:",
            "a b:443",
        ] {
            let error = with(bad).validate().unwrap_err();
            assert_eq!(error.field, "upstream_auth_address", "{bad}");
        }
    }

    #[test]
    fn host_headers_parse() {
        assert_eq!(
            origin("east.example.com"),
            RequestOrigin {
                host: "east.example.com".into(),
                port: None
            }
        );
        assert_eq!(origin("east.example.com:8443").port, Some(8443));
        assert_eq!(
            origin("[::1]:8080"),
            RequestOrigin {
                host: "[::1]".into(),
                port: Some(8080)
            }
        );
        assert_eq!(origin("[::1]").port, None);
        assert!(RequestOrigin::from_host_header("a:b").is_none());
        assert!(RequestOrigin::from_host_header("a b").is_none());
        assert!(RequestOrigin::from_host_header("[::1]x").is_none());
    }

    #[test]
    fn proxied_urls_use_the_request_host_and_port() {
        let zone = Zone::with_defaults("east");
        let c = zone.connection(&origin("east.example.com:8443"), "s1", "10.0.0.5", 4902);
        assert_eq!(c.url, "https://east.example.com:8443/desktop/s1/");
        assert_eq!(c.allow_origin_domain, "east.example.com");
        assert_eq!(c.upstream_auth_address, "proxy");
        let c = zone.connection(&origin("east.example.com"), "s1", "10.0.0.5", 4902);
        assert_eq!(
            c.url, "https://east.example.com:443/desktop/s1/",
            "no port: https"
        );
    }

    #[test]
    fn a_fixed_proxy_overrides_host_and_port() {
        let zone = Zone {
            proxy_hostname: "proxy.$request_host$".into(),
            proxy_port: 9443,
            proxy_path: "/k/".into(),
            upstream_auth_address: "$request_host$".into(),
            ..Zone::with_defaults("east")
        };
        let c = zone.connection(&origin("e.example:80"), "s2", "10.0.0.5", 4902);
        assert_eq!(c.url, "https://proxy.e.example:9443/k/s2/");
        assert_eq!(c.upstream_auth_address, "e.example");
    }

    #[test]
    fn without_the_proxy_users_go_to_the_agent() {
        let zone = Zone {
            proxy_connections: false,
            ..Zone::with_defaults("east")
        };
        let c = zone.connection(&origin("e.example:80"), "s3", "10.0.0.5", 4902);
        assert_eq!(c.url, "https://10.0.0.5:4902/");
        let c = zone.connection(&origin("e.example:80"), "s3", "fd00::5", 4902);
        assert_eq!(c.url, "https://[fd00::5]:4902/");
    }

    #[test]
    fn specs_and_patches_validate() {
        let spec: ZoneSpec = serde_json::from_str(r#"{"name":"west","proxy_port":8443}"#).unwrap();
        let zone = spec.into_zone().unwrap();
        assert_eq!(zone.proxy_port, 8443);
        assert_eq!(zone.proxy_path, "/desktop");
        assert!(serde_json::from_str::<ZoneSpec>(r#"{"name":"w","colour":"red"}"#).is_err());
        let bad: ZoneSpec = serde_json::from_str(r#"{"name":"West"}"#).unwrap();
        assert_eq!(bad.into_zone().unwrap_err().field, "name");
        let err = zone
            .patched(ZonePatch {
                proxy_path: Some("desktop".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(err.field, "proxy_path");
        let err = zone
            .patched(ZonePatch {
                proxy_hostname: Some("a b".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(err.field, "proxy_hostname");
    }
}
