//! EC2 XML answers: instances (`RunInstances`, `DescribeInstances`) and errors.

use serde::Deserialize;
use zonebroker_plugin_sdk::provider::{Pair, ProviderError, SettingError, Vm, VmState};

#[derive(Deserialize)]
struct Items<T> {
    #[serde(rename = "item", default = "Vec::new")]
    items: Vec<T>,
}

impl<T> Default for Items<T> {
    fn default() -> Self {
        Items { items: Vec::new() }
    }
}

#[derive(Deserialize)]
struct Describe {
    #[serde(rename = "reservationSet", default)]
    reservations: Option<Items<Reservation>>,
    #[serde(rename = "instancesSet", default)]
    instances: Option<Items<Instance>>,
    #[serde(rename = "nextToken", default)]
    next_token: Option<String>,
}

#[derive(Deserialize)]
struct Reservation {
    #[serde(rename = "instancesSet", default)]
    instances: Items<Instance>,
}

#[derive(Deserialize)]
struct Instance {
    #[serde(rename = "instanceId")]
    id: String,
    #[serde(rename = "instanceState", default)]
    state: Option<State>,
    #[serde(rename = "privateIpAddress", default)]
    private_ip: Option<String>,
    #[serde(rename = "ipAddress", default)]
    public_ip: Option<String>,
    #[serde(rename = "tagSet", default)]
    tags: Option<Items<Tag>>,
}

#[derive(Deserialize)]
struct State {
    name: String,
}

#[derive(Deserialize)]
struct Tag {
    key: String,
    #[serde(default)]
    value: String,
}

/// The instances of a `RunInstances` or `DescribeInstances` answer.
pub fn instances(body: &str) -> Result<Vec<Vm>, ProviderError> {
    let parsed: Describe = quick_xml::de::from_str(body)
        .map_err(|e| ProviderError::Other(format!("unreadable EC2 answer: {e}")))?;
    let mut instances: Vec<Instance> = parsed.instances.map(|i| i.items).unwrap_or_default();
    for reservation in parsed.reservations.map(|r| r.items).unwrap_or_default() {
        instances.extend(reservation.instances.items);
    }
    Ok(instances.into_iter().map(vm).collect())
}

/// The `nextToken` of a paginated answer, if more pages follow.
pub fn next_token(body: &str) -> Option<String> {
    quick_xml::de::from_str::<Describe>(body)
        .ok()
        .and_then(|d| d.next_token)
        .filter(|t| !t.is_empty())
}

fn vm(instance: Instance) -> Vm {
    let state = match instance.state.as_ref().map(|s| s.name.as_str()) {
        Some("pending") => VmState::Pending,
        Some("running") => VmState::Running,
        Some("stopping") => VmState::Stopping,
        Some("stopped") => VmState::Stopped,
        Some("shutting-down") => VmState::Terminating,
        Some("terminated") => VmState::Terminated,
        _ => VmState::Unknown,
    };
    Vm {
        instance_id: instance.id,
        state,
        private_address: instance.private_ip.filter(|a| !a.is_empty()),
        public_address: instance.public_ip.filter(|a| !a.is_empty()),
        tags: instance
            .tags
            .map(|t| t.items)
            .unwrap_or_default()
            .into_iter()
            .map(|t| Pair {
                name: t.key,
                value: t.value,
            })
            .collect(),
    }
}

#[derive(Deserialize)]
struct ErrorResponse {
    #[serde(rename = "Errors")]
    errors: ErrorList,
}

#[derive(Deserialize)]
struct ErrorList {
    #[serde(rename = "Error", default)]
    errors: Vec<AwsError>,
}

#[derive(Deserialize)]
struct AwsError {
    #[serde(rename = "Code")]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

/// A failed call's answer as a typed error: by EC2's error code when the body is EC2's XML,
/// by the status otherwise (emulators answer some failures with HTML).
pub fn error(status: u16, body: &str) -> ProviderError {
    let Ok(parsed) = quick_xml::de::from_str::<ErrorResponse>(body) else {
        let excerpt: String = body.chars().take(200).collect();
        return if status >= 500 || status == 429 {
            ProviderError::Transient(format!("HTTP {status}: {excerpt}"))
        } else {
            ProviderError::Other(format!("HTTP {status}: {excerpt}"))
        };
    };
    let Some(first) = parsed.errors.errors.into_iter().next() else {
        return ProviderError::Other(format!("HTTP {status} without an error code"));
    };
    let message = format!("{}: {}", first.code, first.message);
    let setting = |setting: &str| {
        ProviderError::InvalidConfig(SettingError {
            setting: setting.to_string(),
            message: message.clone(),
        })
    };
    match first.code.as_str() {
        "AuthFailure"
        | "UnauthorizedOperation"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "OptInRequired"
        | "Blocked" => ProviderError::Auth(message),
        "InstanceLimitExceeded" | "InsufficientInstanceCapacity" | "VcpuLimitExceeded" => {
            ProviderError::Quota(message)
        }
        "RequestLimitExceeded" | "Unavailable" | "InternalError" | "ServiceUnavailable" => {
            ProviderError::Transient(message)
        }
        code if code.starts_with("InvalidInstanceID") => ProviderError::NotFound(message),
        code if code.starts_with("InvalidAMIID") => setting("ami_id"),
        code if code.starts_with("InvalidSubnetID") || code.starts_with("InvalidSubnet") => {
            setting("subnet_id")
        }
        code if code.starts_with("InvalidGroup") || code.starts_with("InvalidSecurityGroup") => {
            setting("security_group_ids")
        }
        code if code.starts_with("InvalidKeyPair") => setting("key_name"),
        "InvalidInstanceType" | "Unsupported" => setting("instance_type"),
        _ if status >= 500 => ProviderError::Transient(message),
        _ => ProviderError::Other(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIBE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r-1</requestId>
  <reservationSet>
    <item>
      <reservationId>r-1234</reservationId>
      <instancesSet>
        <item>
          <instanceId>i-0abc</instanceId>
          <imageId>ami-760aaa0f</imageId>
          <instanceState><code>16</code><name>running</name></instanceState>
          <privateIpAddress>10.0.0.12</privateIpAddress>
          <ipAddress>54.1.2.3</ipAddress>
          <tagSet>
            <item><key>zonebroker:server-id</key><value>s-1</value></item>
            <item><key>Name</key><value>zb-a1</value></item>
          </tagSet>
        </item>
        <item>
          <instanceId>i-0def</instanceId>
          <instanceState><code>48</code><name>terminated</name></instanceState>
        </item>
      </instancesSet>
    </item>
  </reservationSet>
</DescribeInstancesResponse>"#;

    #[test]
    fn instances_are_read_with_state_addresses_and_tags() {
        let vms = instances(DESCRIBE).unwrap();
        assert_eq!(vms.len(), 2);
        assert_eq!(vms[0].instance_id, "i-0abc");
        assert_eq!(vms[0].state, VmState::Running);
        assert_eq!(vms[0].private_address.as_deref(), Some("10.0.0.12"));
        assert_eq!(vms[0].public_address.as_deref(), Some("54.1.2.3"));
        assert_eq!(vms[0].tags[0].name, "zonebroker:server-id");
        assert_eq!(vms[1].state, VmState::Terminated);
        assert!(vms[1].tags.is_empty());
        assert_eq!(next_token(DESCRIBE), None);
    }

    #[test]
    fn run_instances_answers_read_too() {
        let body = r#"<RunInstancesResponse><reservationId>r-1</reservationId><instancesSet><item><instanceId>i-new</instanceId><instanceState><code>0</code><name>pending</name></instanceState></item></instancesSet></RunInstancesResponse>"#;
        let vms = instances(body).unwrap();
        assert_eq!(
            (vms[0].instance_id.as_str(), vms[0].state),
            ("i-new", VmState::Pending)
        );
        assert_eq!(
            instances("<DescribeInstancesResponse><reservationSet/></DescribeInstancesResponse>")
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn errors_are_typed_by_code_and_non_xml_by_status() {
        let body = |code: &str| {
            format!(
                "<Response><Errors><Error><Code>{code}</Code><Message>m</Message></Error></Errors><RequestID>x</RequestID></Response>"
            )
        };
        assert!(matches!(
            error(400, &body("InvalidInstanceID.NotFound")),
            ProviderError::NotFound(_)
        ));
        assert!(matches!(
            error(401, &body("AuthFailure")),
            ProviderError::Auth(_)
        ));
        assert!(matches!(
            error(400, &body("InstanceLimitExceeded")),
            ProviderError::Quota(_)
        ));
        assert!(matches!(
            error(503, &body("RequestLimitExceeded")),
            ProviderError::Transient(_)
        ));
        match error(400, &body("InvalidAMIID.NotFound")) {
            ProviderError::InvalidConfig(e) => assert_eq!(e.setting, "ami_id"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            error(500, "<html>oops</html>"),
            ProviderError::Transient(_)
        ));
        assert!(matches!(error(404, "not xml"), ProviderError::Other(_)));
    }
}
