//! Sessions: a user's running image on an agent, and how to reach it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::capacity::Demand;
use super::validation::{self, FieldError};
use super::zone::{Connection, RequestOrigin, Zone};

/// A placed session, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub user: String,
    /// The image it runs (container sessions).
    #[serde(default)]
    pub image: Option<String>,
    /// The workspace it was requested as, if any.
    #[serde(default)]
    pub workspace: Option<String>,
    /// Whether it runs on an agent or on a pool's server.
    #[serde(default)]
    pub host_kind: HostKind,
    /// The zone of the agent it runs on.
    pub zone: String,
    /// The agent or server it runs on.
    pub agent: Uuid,
    pub agent_hostname: String,
    pub connection: Connection,
    /// What it reserves on the agent.
    pub demand: Demand,
    /// Unix time, milliseconds.
    pub created_at_ms: u64,
    /// For `local-client` pool workspaces: what the `.rdp` file says.
    #[serde(default)]
    pub rdp: Option<RdpFile>,
}

/// The host placement reserved for a session: an agent or a pool server.
#[derive(Clone, Copy, Debug)]
pub struct SessionHost<'a> {
    pub kind: HostKind,
    /// The agent's id, or the server's.
    pub id: Uuid,
    pub hostname: &'a str,
    /// The zone the host is in (its proxy fronts the session).
    pub zone: &'a str,
    /// Where the session is reached behind the proxy.
    pub address: &'a str,
    pub port: u16,
}

/// What a session is of, and for whom.
#[derive(Clone, Debug)]
pub struct SessionOf {
    pub user: String,
    /// The image it runs (container sessions).
    pub image: Option<String>,
    /// The workspace it was requested as, if any.
    pub workspace: Option<String>,
    /// What it reserves on its host.
    pub demand: Demand,
    /// For `local-client` pool workspaces: what the `.rdp` file says.
    pub rdp: Option<RdpFile>,
}

impl Session {
    /// Session `id` of `of` on `host`, reached from `origin` as `host_zone` (the zone of the
    /// host) connects its sessions; created at `now_ms`.
    pub fn placed(
        id: Uuid,
        of: SessionOf,
        host: SessionHost<'_>,
        host_zone: &Zone,
        origin: &RequestOrigin,
        now_ms: u64,
    ) -> Session {
        Session {
            id,
            user: of.user,
            image: of.image,
            workspace: of.workspace,
            host_kind: host.kind,
            zone: host.zone.to_string(),
            agent: host.id,
            agent_hostname: host.hostname.to_string(),
            connection: host_zone.connection(origin, &id.to_string(), host.address, host.port),
            demand: of.demand,
            created_at_ms: now_ms,
            rdp: of.rdp,
        }
    }
}

/// What a session runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum HostKind {
    /// A container agent.
    #[default]
    Agent,
    /// A server of a pool.
    Server,
}

/// An RDP connection file for the user's own client, through the zone's RDP gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdpFile {
    /// `host:port` of the server.
    pub full_address: String,
    pub username: Option<String>,
    /// The RDP gateway (the zone's proxy host), `host[:port]`.
    pub gateway_hostname: String,
}

impl RdpFile {
    /// The file's text (`.rdp` settings, one `name:type:value` per line, CRLF). Values are
    /// validated where they are written; control characters (a CR or LF would start a
    /// setting of its own) are dropped here again, whatever a record holds.
    pub fn render(&self) -> String {
        let clean = |value: &str| {
            value
                .chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
        };
        let mut lines = vec![
            format!("full address:s:{}", clean(&self.full_address)),
            "prompt for credentials:i:1".to_string(),
            "gatewayusagemethod:i:1".to_string(),
            "gatewayprofileusagemethod:i:1".to_string(),
            "gatewaycredentialssource:i:0".to_string(),
            format!("gatewayhostname:s:{}", clean(&self.gateway_hostname)),
            "authentication level:i:2".to_string(),
        ];
        if let Some(user) = &self.username {
            lines.push(format!("username:s:{}", clean(user)));
        }
        lines.push(String::new());
        lines.join("\r\n")
    }
}
/// The body of `POST /sessions`.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The image to run (or name a workspace instead).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub image: Option<String>,
    /// The workspace to launch (or name an image instead).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    )]
    pub workspace: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
        )
    )]
    /// Who the session is for.
    pub user: String,
}

impl SessionRequest {
    pub fn validate(&self) -> Result<(), FieldError> {
        match (&self.image, &self.workspace) {
            (Some(image), None) => validation::name("image", image)?,
            (None, Some(workspace)) => validation::name("workspace", workspace)?,
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "workspace",
                    "name an image or a workspace, not both",
                ));
            }
            (None, None) => {
                return Err(FieldError::new(
                    "workspace",
                    "name a workspace (or an image) to launch",
                ));
            }
        }
        validation::text("user", &self.user, 256)
    }
}

/// A session's place in the order sessions are listed in (oldest first, ties by id): the
/// cursor of a page of sessions, written `<created_at_ms>-<id>`. It marks a place even once
/// its session has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionPosition {
    created_at_ms: u64,
    id: Uuid,
}

impl SessionPosition {
    pub fn of(session: &Session) -> Self {
        SessionPosition {
            created_at_ms: session.created_at_ms,
            id: session.id,
        }
    }

    /// Its parts: the session's creation time and id.
    pub fn parts(&self) -> (u64, Uuid) {
        (self.created_at_ms, self.id)
    }
}

impl std::fmt::Display for SessionPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.created_at_ms, self.id)
    }
}

impl std::str::FromStr for SessionPosition {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = "a cursor from a previous page (`<milliseconds>-<session id>`)";
        let (ms, id) = text.split_once('-').ok_or(malformed)?;
        Ok(SessionPosition {
            created_at_ms: ms.parse().map_err(|_| malformed)?,
            id: id.parse().map_err(|_| malformed)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placed_session_names_its_host_and_is_reached_through_the_host_zone() {
        let id = Uuid::from_u128(42);
        let host_zone = Zone {
            proxy_connections: false,
            upstream_auth_address: "$request_host$".into(),
            ..Zone::with_defaults("west")
        };
        let origin = RequestOrigin {
            host: "broker.example.com".into(),
            port: Some(8443),
        };
        let of = SessionOf {
            user: "alice".into(),
            image: None,
            workspace: Some("desktops".into()),
            demand: Demand {
                millicores: 1000,
                memory: 1 << 30,
                gpus: 0,
            },
            rdp: None,
        };
        let host = SessionHost {
            kind: HostKind::Server,
            id: Uuid::from_u128(7),
            hostname: "zb-00000007",
            zone: "west",
            address: "10.1.0.7",
            port: 3389,
        };
        let session = Session::placed(id, of.clone(), host, &host_zone, &origin, 1234);
        assert_eq!(session.id, id);
        assert_eq!(
            (
                session.user.as_str(),
                session.workspace.as_deref(),
                session.image
            ),
            ("alice", Some("desktops"), None)
        );
        assert_eq!(session.host_kind, HostKind::Server);
        assert_eq!(
            (
                session.zone.as_str(),
                session.agent,
                session.agent_hostname.as_str()
            ),
            ("west", Uuid::from_u128(7), "zb-00000007")
        );
        assert_eq!(session.connection.url, "https://10.1.0.7:3389/");
        assert_eq!(
            session.connection.upstream_auth_address,
            "broker.example.com"
        );
        assert_eq!((session.demand, session.created_at_ms), (of.demand, 1234));
        let proxied = Session::placed(
            id,
            of,
            SessionHost {
                kind: HostKind::Agent,
                ..host
            },
            &Zone::with_defaults("west"),
            &origin,
            1234,
        );
        assert_eq!(proxied.host_kind, HostKind::Agent);
        assert!(
            proxied
                .connection
                .url
                .ends_with("/00000000-0000-0000-0000-00000000002a/"),
            "{}",
            proxied.connection.url
        );
        assert!(
            proxied
                .connection
                .url
                .starts_with("https://broker.example.com"),
            "{}",
            proxied.connection.url
        );
    }

    #[test]
    fn an_rdp_file_names_the_server_and_the_gateway() {
        let file = RdpFile {
            full_address: "10.0.0.5:3389".into(),
            username: Some("kasm".into()),
            gateway_hostname: "broker.example.com:443".into(),
        }
        .render();
        assert!(
            file.starts_with("full address:s:10.0.0.5:3389\r\n"),
            "{file}"
        );
        assert!(file.contains("gatewayhostname:s:broker.example.com:443\r\n"));
        assert!(file.contains("username:s:kasm\r\n"));
    }

    #[test]
    fn a_value_cannot_add_a_setting_to_an_rdp_file() {
        let file = RdpFile {
            full_address: "10.0.0.5:3389".into(),
            username: Some("bob\r\nfull address:s:evil".into()),
            gateway_hostname: "gw\nx:s:y".into(),
        }
        .render();
        assert_eq!(file.matches("\r\n").count(), 8, "{file}");
        assert_eq!(
            file.lines()
                .filter(|l| l.starts_with("full address:"))
                .count(),
            1,
            "{file}"
        );
        assert!(
            file.contains("username:s:bobfull address:s:evil\r\n"),
            "{file}"
        );
        assert!(file.contains("gatewayhostname:s:gwx:s:y\r\n"), "{file}");
    }

    #[test]
    fn a_request_names_an_image_or_a_workspace() {
        let request = |image: Option<&str>, workspace: Option<&str>| SessionRequest {
            image: image.map(Into::into),
            workspace: workspace.map(Into::into),
            user: "ann".into(),
        };
        assert!(request(Some("a"), None).validate().is_ok());
        assert!(request(None, Some("w")).validate().is_ok());
        assert_eq!(
            request(None, None).validate().unwrap_err().field,
            "workspace"
        );
        assert_eq!(
            request(Some("a"), Some("w")).validate().unwrap_err().field,
            "workspace"
        );
    }

    #[test]
    fn a_session_position_reads_back_what_it_writes_and_orders_by_age_then_id() {
        let old = SessionPosition {
            created_at_ms: 5,
            id: Uuid::from_u128(9),
        };
        let new = SessionPosition {
            created_at_ms: 6,
            id: Uuid::from_u128(1),
        };
        assert!(old < new);
        assert_eq!(old.to_string().parse::<SessionPosition>(), Ok(old));
        for bad in ["", "5", "x-00000000-0000-0000-0000-000000000009", "5-nope"] {
            assert!(bad.parse::<SessionPosition>().is_err(), "{bad}");
        }
    }
}
