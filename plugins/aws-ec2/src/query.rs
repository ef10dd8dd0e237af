//! EC2 Query API parameters.

use zonebroker_plugin_sdk::encoding::{base64, percent_encode};
use zonebroker_plugin_sdk::provider::VmSpec;

use crate::Config;

/// `application/x-www-form-urlencoded` body, AWS style.
pub fn form_encode(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `RunInstances` of one instance for `spec`: the script as user data, the tags on the
/// instance, the idempotency key as `ClientToken`, and the instance metadata service in
/// IMDSv2-only mode (a session token per request, one network hop), so that nothing on the
/// VM's network can read its metadata and user data by a forwarded plain GET.
pub fn run_instances(config: &Config, spec: &VmSpec) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = vec![
        ("ImageId".into(), config.ami_id.into()),
        ("InstanceType".into(), config.instance_type.into()),
        ("MinCount".into(), "1".into()),
        ("MaxCount".into(), "1".into()),
        ("ClientToken".into(), spec.idempotency_key.clone()),
        ("UserData".into(), base64(spec.startup_script.as_bytes())),
        ("MetadataOptions.HttpTokens".into(), "required".into()),
        ("MetadataOptions.HttpEndpoint".into(), "enabled".into()),
        ("MetadataOptions.HttpPutResponseHopLimit".into(), "1".into()),
        ("TagSpecification.1.ResourceType".into(), "instance".into()),
    ];
    let tags = std::iter::once(("Name".to_string(), spec.hostname.clone()))
        .chain(spec.tags.iter().map(|p| (p.name.clone(), p.value.clone())));
    for (i, (key, value)) in tags.enumerate() {
        params.push((format!("TagSpecification.1.Tag.{}.Key", i + 1), key));
        params.push((format!("TagSpecification.1.Tag.{}.Value", i + 1), value));
    }
    if let Some(subnet) = config.subnet_id {
        params.push(("SubnetId".into(), subnet.into()));
    }
    for (i, group) in config.security_group_ids.iter().enumerate() {
        params.push((format!("SecurityGroupId.{}", i + 1), (*group).into()));
    }
    if let Some(key) = config.key_name {
        params.push(("KeyName".into(), key.into()));
    }
    params
}

/// `DescribeInstances` filters: carrying tag `name` = `value`, and not terminated.
pub fn live_with_tag(name: &str, value: &str) -> Vec<(String, String)> {
    let mut params = vec![
        ("Filter.1.Name".to_string(), format!("tag:{name}")),
        ("Filter.1.Value.1".to_string(), value.to_string()),
        (
            "Filter.2.Name".to_string(),
            "instance-state-name".to_string(),
        ),
    ];
    for (i, state) in ["pending", "running", "stopping", "stopped"]
        .iter()
        .enumerate()
    {
        params.push((format!("Filter.2.Value.{}", i + 1), (*state).to_string()));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use zonebroker_plugin_sdk::provider::{Os, Pair, Settings};

    #[test]
    fn instances_require_imdsv2_and_carry_every_tag() {
        let settings = Settings::from_pairs([
            ("region", "us-east-1"),
            ("access_key_id", "AKID"),
            ("secret_access_key", "secret"),
            ("ami_id", "ami-12345678"),
        ]);
        let config = Config::from_settings(&settings).unwrap();
        let spec = VmSpec {
            server_id: "s".into(),
            hostname: "zb-1".into(),
            idempotency_key: "key".into(),
            os: Os::Linux,
            startup_script: "#!/bin/bash".into(),
            tags: vec![Pair {
                name: "zonebroker:installation".into(),
                value: "i-1".into(),
            }],
        };
        let params = run_instances(&config, &spec);
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("MetadataOptions.HttpTokens"), Some("required"));
        assert_eq!(get("MetadataOptions.HttpPutResponseHopLimit"), Some("1"));
        assert_eq!(
            get("TagSpecification.1.Tag.2.Key"),
            Some("zonebroker:installation")
        );
        assert_eq!(get("ClientToken"), Some("key"));
    }
}
