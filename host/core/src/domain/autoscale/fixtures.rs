//! What the unit tests of this module share: a config and a server.

use uuid::Uuid;

use super::config::{default_generator, default_prefix};
use super::*;
use crate::domain::script::Os;

pub(crate) fn config(minimum: u32, per_server: u32) -> AutoScaleConfig {
    AutoScaleConfig {
        name: "pool-a".into(),
        enabled: true,
        pool: "pool".into(),
        zone: "default".into(),
        connection_type: ConnectionType::Rdp,
        connection_port: None,
        credential_type: CredentialType::Static,
        connection_username: Some("kasm".into()),
        connection_password: Some("secret".into()),
        connection_info: None,
        reusable: false,
        minimum_available_sessions: minimum,
        max_sessions_per_server: per_server,
        vm_provider_config: "aws".into(),
        os: Os::Linux,
        startup_script: "#!/bin/sh".into(),
        script_generator: default_generator(),
        server_name_prefix: default_prefix(),
        provision_timeout: 600,
        downscale_backoff: 300,
        create_ad_computer_record: false,
        ldap_config: None,
        ad_computer_ou_dn: None,
        recursive_ad_cleanup: false,
        version: 0,
    }
}

pub(crate) fn a_server() -> Server {
    Server {
        id: Uuid::from_u128(7),
        pool: "pool".into(),
        zone: "default".into(),
        config: Some("pool-a".into()),
        hostname: "zb-00000000".into(),
        address: None,
        port: 3389,
        connection_type: ConnectionType::Rdp,
        max_sessions: 4,
        status: ServerStatus::Provisioning,
        instance_id: None,
        idempotency_key: "k".into(),
        checkin_token_id: Some("j".into()),
        spent: false,
        created_at_ms: 0,
        status_changed_at_ms: 0,
        idle_since_ms: None,
        last_error: None,
        ad_computer_dn: None,
        ad_ldap_config: None,
        installation_tagged: true,
        bootstrap_required: true,
        bootstrapped_at_ms: None,
        vm_created_at_ms: None,
        uncertain_create_at_ms: None,
        version: 0,
    }
}
