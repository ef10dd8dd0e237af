//! `--listen ADDR=ZONE[,tls-cert=FILE,tls-key=FILE][,public=HOST[:PORT]]`: one listener, the
//! zone it manages, its TLS files and the address VMs and users reach it at.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::domain::names::{self, NameError};
use crate::domain::validation;

/// A certificate chain and its private key, PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A listener and the zone it manages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    pub addr: SocketAddr,
    pub zone: String,
    /// This listener's TLS files, overriding `--tls-cert`/`--tls-key`.
    pub tls: Option<TlsFiles>,
    /// `HOST[:PORT]` VMs and users reach this listener at (what `$request_host$` stands for
    /// in startup scripts). Default: the bound address.
    pub public: Option<String>,
}

/// Why a `--listen` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListenerSpecError {
    #[error(
        "expected ADDR=ZONE[,tls-cert=FILE,tls-key=FILE][,public=HOST[:PORT]], e.g. 127.0.0.1:8080=default"
    )]
    Shape,
    #[error("`{0}` is not an IP address with a port")]
    Addr(String),
    #[error("zone name: {0}")]
    Zone(#[from] NameError),
    #[error("unknown listener option `{0}` (known: tls-cert, tls-key, public)")]
    Option(String),
    #[error("`tls-cert` and `tls-key` go together")]
    TlsPair,
    #[error("public address: {0}")]
    Public(String),
}

impl FromStr for ListenerSpec {
    type Err = ListenerSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let head = parts.next().unwrap_or_default();
        let (addr, zone) = head.rsplit_once('=').ok_or(ListenerSpecError::Shape)?;
        let addr = addr
            .parse()
            .map_err(|_| ListenerSpecError::Addr(addr.to_string()))?;
        names::validate(zone)?;
        let (mut cert, mut key, mut public) = (None, None, None);
        for option in parts {
            let (name, value) = option.split_once('=').ok_or(ListenerSpecError::Shape)?;
            if value.is_empty() {
                return Err(ListenerSpecError::Shape);
            }
            match name {
                "tls-cert" => cert = Some(PathBuf::from(value)),
                "tls-key" => key = Some(PathBuf::from(value)),
                "public" => {
                    validation::authority("public", value)
                        .map_err(|e| ListenerSpecError::Public(e.message))?;
                    public = Some(value.to_string());
                }
                other => return Err(ListenerSpecError::Option(other.to_string())),
            }
        }
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(ListenerSpecError::TlsPair),
        };
        Ok(ListenerSpec {
            addr,
            zone: zone.to_string(),
            tls,
            public,
        })
    }
}

impl ListenerSpec {
    /// Where VMs and users reach this listener, bound at `bound`: its public address, else
    /// the bound one; `None` when bound to every address without a public one (`0.0.0.0`
    /// is nowhere a VM can call).
    pub fn reachable_at(&self, bound: SocketAddr) -> Option<String> {
        match &self.public {
            Some(public) => Some(public.clone()),
            None if bound.ip().is_unspecified() => None,
            None => Some(bound.to_string()),
        }
    }
}

impl Default for ListenerSpec {
    fn default() -> Self {
        ListenerSpec {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            zone: "default".into(),
            tls: None,
            public: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_host_is_the_public_address_else_a_specific_bound_one() {
        let bound_all: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let public: ListenerSpec = "0.0.0.0:8443=east,public=broker.example.com:443"
            .parse()
            .unwrap();
        assert_eq!(
            public.reachable_at(bound_all).as_deref(),
            Some("broker.example.com:443")
        );
        let no_public: ListenerSpec = "0.0.0.0:8443=east".parse().unwrap();
        assert_eq!(no_public.reachable_at(bound_all), None);
        let v6_all: SocketAddr = "[::]:8443".parse().unwrap();
        assert_eq!(no_public.reachable_at(v6_all), None);
        let specific: ListenerSpec = "10.0.0.5:8443=east".parse().unwrap();
        assert_eq!(
            specific
                .reachable_at("10.0.0.5:8443".parse().unwrap())
                .as_deref(),
            Some("10.0.0.5:8443")
        );
    }

    #[test]
    fn listener_specs_parse_addr_zone_and_options() {
        let spec: ListenerSpec = "127.0.0.1:8080=east".parse().unwrap();
        assert_eq!(spec.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(spec.zone, "east");
        assert_eq!((spec.tls, spec.public), (None, None));
        let v6: ListenerSpec = "[::1]:9000=west-2".parse().unwrap();
        assert_eq!(v6.addr.port(), 9000);
        let full: ListenerSpec =
            "0.0.0.0:443=east,tls-cert=/etc/zb/east.pem,tls-key=/etc/zb/east.key,public=east.example.com:443"
                .parse()
                .unwrap();
        assert_eq!(
            full.tls,
            Some(TlsFiles {
                cert: "/etc/zb/east.pem".into(),
                key: "/etc/zb/east.key".into()
            })
        );
        assert_eq!(full.public.as_deref(), Some("east.example.com:443"));
        let public: ListenerSpec = "0.0.0.0:80=a,public=10.0.0.5".parse().unwrap();
        assert_eq!(public.public.as_deref(), Some("10.0.0.5"));

        for (bad, expected) in [
            ("127.0.0.1:8080", "expected ADDR=ZONE"),
            ("localhost:80=a", "not an IP address"),
            ("127.0.0.1:80=East", "zone name"),
            ("127.0.0.1:80=a,tls-cert=c.pem", "go together"),
            ("127.0.0.1:80=a,colour=red", "unknown listener option"),
            ("127.0.0.1:80=a,public=", "expected ADDR=ZONE"),
            ("127.0.0.1:80=a,public=bad host", "public address"),
            ("127.0.0.1:80=a,public=h:99999", "public address"),
        ] {
            let error = bad.parse::<ListenerSpec>().unwrap_err().to_string();
            assert!(error.contains(expected), "{bad}: {error}");
        }
    }
}
