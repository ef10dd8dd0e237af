//! `aws-ec2`: zonebroker's VM-provider adapter for Amazon EC2 (and EC2-compatible endpoints
//! such as moto): the EC2 Query API (`RunInstances`, `DescribeInstances`,
//! `TerminateInstances`) over `wasi:http`, signed with SigV4 by AWS's own `aws-sigv4`.
//!
//! Settings: `region`, `access_key_id`, `secret_access_key` (secret), `ami_id`,
//! `instance_type`, `subnet_id`, `security_group_ids` (comma-separated), `key_name`,
//! `max_instances`, `endpoint` (for private endpoints and emulators; default
//! `https://ec2.{region}.amazonaws.com`).

pub mod query;
pub mod sign;
pub mod xml;

use zonebroker_plugin_sdk::http::{self, Request};
use zonebroker_plugin_sdk::provider::{
    Pair, ProviderError, ProviderInfo, SettingError, SettingSpec, Settings, ValidatedSettings, Vm,
    VmProvider, VmSpec,
};

/// The EC2 API version of every request.
const API_VERSION: &str = "2016-11-15";

pub struct Ec2;

/// Settings after validation: what every call needs.
pub struct Config<'a> {
    pub endpoint: String,
    pub region: &'a str,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub ami_id: &'a str,
    pub instance_type: &'a str,
    pub subnet_id: Option<&'a str>,
    pub security_group_ids: Vec<&'a str>,
    pub key_name: Option<&'a str>,
    pub max_instances: Option<u32>,
}

fn invalid(setting: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::InvalidConfig(SettingError {
        setting: setting.to_string(),
        message: message.into(),
    })
}

const KNOWN_SETTINGS: &[&str] = &[
    "region",
    "access_key_id",
    "secret_access_key",
    "ami_id",
    "instance_type",
    "subnet_id",
    "security_group_ids",
    "key_name",
    "max_instances",
    "endpoint",
];

impl<'a> Config<'a> {
    pub fn from_settings(settings: &'a Settings) -> Result<Config<'a>, ProviderError> {
        if let Some(unknown) = settings
            .0
            .iter()
            .find(|p| !KNOWN_SETTINGS.contains(&p.name.as_str()))
        {
            return Err(invalid(&unknown.name, "not a setting of aws-ec2"));
        }
        let region = settings.require("region")?;
        if !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(invalid("region", "a region looks like `us-east-1`"));
        }
        let endpoint = match settings.get("endpoint").filter(|e| !e.is_empty()) {
            Some(endpoint) => {
                let url = http::parse_url(endpoint).map_err(|e| invalid("endpoint", e.0))?;
                format!(
                    "{}://{}",
                    if url.https { "https" } else { "http" },
                    url.authority
                )
            }
            None => format!("https://ec2.{region}.amazonaws.com"),
        };
        let max_instances = match settings.get("max_instances").filter(|v| !v.is_empty()) {
            Some(v) => Some(
                v.parse()
                    .map_err(|_| invalid("max_instances", "a whole number"))?,
            ),
            None => None,
        };
        let optional = |name: &str| settings.get(name).filter(|v| !v.is_empty());
        Ok(Config {
            endpoint,
            region,
            access_key_id: settings.require("access_key_id")?,
            secret_access_key: settings.require("secret_access_key")?,
            ami_id: settings.require("ami_id")?,
            instance_type: optional("instance_type").unwrap_or("t3.medium"),
            subnet_id: optional("subnet_id"),
            security_group_ids: optional("security_group_ids")
                .map(|ids| {
                    ids.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            key_name: optional("key_name"),
            max_instances,
        })
    }

    /// POST one Query API action; answer the XML body of a success, or a typed error.
    fn call(&self, action: &str, params: &[(String, String)]) -> Result<String, ProviderError> {
        let mut form = vec![
            ("Action".to_string(), action.to_string()),
            ("Version".to_string(), API_VERSION.to_string()),
        ];
        form.extend_from_slice(params);
        let body = query::form_encode(&form);
        let url = format!("{}/", self.endpoint);
        let headers = sign::sign_post(self, &url, &body, std::time::SystemTime::now())
            .map_err(|e| ProviderError::Other(format!("signing failed: {e}")))?;
        let mut request = Request::post(url, body.into_bytes());
        request.timeout = Some(std::time::Duration::from_secs(20));
        // `host` is signed but not sent: wasi:http sets it from the URL (and forbids setting it).
        for (name, value) in headers.into_iter().filter(|(name, _)| name != "host") {
            request = request.header(name, value);
        }
        let response =
            http::send(&request).map_err(|e| ProviderError::Transient(format!("{action}: {e}")))?;
        let text = String::from_utf8_lossy(&response.body).into_owned();
        if (200..300).contains(&response.status) {
            return Ok(text);
        }
        Err(xml::error(response.status, &text))
    }
}

impl VmProvider for Ec2 {
    fn describe() -> ProviderInfo {
        let setting =
            |name: &str, description: &str, required: bool, secret: bool, default: Option<&str>| {
                SettingSpec {
                    name: name.into(),
                    description: description.into(),
                    required,
                    secret,
                    default_value: default.map(Into::into),
                }
            };
        ProviderInfo {
            name: "aws-ec2".into(),
            description: "Amazon EC2 (or an EC2-compatible endpoint): RunInstances with the startup script as user data, tagged with the server id.".into(),
            settings: vec![
                setting("region", "AWS region, e.g. us-east-1", true, false, None),
                setting("access_key_id", "Access key id of an IAM user allowed to run, describe and terminate instances", true, false, None),
                setting("secret_access_key", "Its secret access key", true, true, None),
                setting("ami_id", "The image (AMI) VMs boot from", true, false, None),
                setting("instance_type", "Instance type", false, false, Some("t3.medium")),
                setting("subnet_id", "Subnet to launch into", false, false, None),
                setting("security_group_ids", "Security group ids, comma-separated", false, false, None),
                setting("key_name", "EC2 key pair name", false, false, None),
                setting("max_instances", "The most instances one AutoScale config may run", false, false, None),
                setting("endpoint", "EC2 endpoint URL (private endpoints, emulators); default https://ec2.REGION.amazonaws.com", false, false, None),
            ],
        }
    }

    fn validate(settings: &Settings) -> Result<ValidatedSettings, ProviderError> {
        let config = Config::from_settings(settings)?;
        Ok(ValidatedSettings {
            endpoints: vec![config.endpoint.clone()],
            max_instances: config.max_instances,
        })
    }

    fn create_vm(settings: &Settings, spec: VmSpec) -> Result<Vm, ProviderError> {
        let config = Config::from_settings(settings)?;
        let params = query::run_instances(&config, &spec);
        let body = config.call("RunInstances", &params)?;
        xml::instances(&body)?
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Other("RunInstances answered no instance".into()))
    }

    fn get_vm(settings: &Settings, instance_id: &str) -> Result<Vm, ProviderError> {
        let config = Config::from_settings(settings)?;
        let params = vec![("InstanceId.1".to_string(), instance_id.to_string())];
        let body = config.call("DescribeInstances", &params)?;
        xml::instances(&body)?
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::NotFound(instance_id.to_string()))
    }

    fn destroy_vm(settings: &Settings, instance_id: &str) -> Result<(), ProviderError> {
        let config = Config::from_settings(settings)?;
        let params = vec![("InstanceId.1".to_string(), instance_id.to_string())];
        match config.call("TerminateInstances", &params) {
            Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn list_vms(settings: &Settings, tag: &Pair) -> Result<Vec<Vm>, ProviderError> {
        let config = Config::from_settings(settings)?;
        let mut vms = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let mut params = query::live_with_tag(&tag.name, &tag.value);
            if let Some(token) = &next_token {
                params.push(("NextToken".into(), token.clone()));
            }
            let body = config.call("DescribeInstances", &params)?;
            vms.extend(xml::instances(&body)?);
            next_token = xml::next_token(&body);
            if next_token.is_none() {
                return Ok(vms);
            }
        }
    }
}

zonebroker_plugin_sdk::export_provider!(Ec2);
