//! moto's server as the EC2 the tests talk to: started on a free loopback port from the
//! Python environment `cargo xtask setup` prepares, stopped when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::python_tool;

pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    http: reqwest::blocking::Client,
}

/// The region tests use.
pub const REGION: &str = "us-east-1";

impl Moto {
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python_tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let started = Instant::now();
        while http.get(format!("{endpoint}/moto-api/")).send().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child,
            endpoint,
            http,
        }
    }

    /// Settings of the `aws-ec2` provider pointed at this moto.
    pub fn settings(&self) -> Vec<(String, String)> {
        [
            ("region", REGION),
            ("access_key_id", "AKIDTESTING"),
            ("secret_access_key", "test-secret-key"),
            ("ami_id", "ami-760aaa0f"),
            ("instance_type", "t3.small"),
            ("endpoint", &self.endpoint),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// One EC2 Query API call, answered as text. moto checks no signature, but routes on
    /// the `Authorization` header's credential scope (an unsigned POST would reach its S3).
    pub fn ec2(&self, params: &[(&str, &str)]) -> String {
        let mut form: Vec<(&str, &str)> = vec![("Version", "2016-11-15")];
        form.extend_from_slice(params);
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let response = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential=AKIDTESTING/20260101/{REGION}/ec2/aws4_request, SignedHeaders=host, Signature=0"),
            )
            .body(body)
            .send()
            .unwrap();
        response.text().unwrap()
    }

    /// Every instance moto knows: (instance id, state name, tags).
    pub fn instances(&self) -> Vec<(String, String, Vec<(String, String)>)> {
        let xml = self.ec2(&[("Action", "DescribeInstances")]);
        let parsed: xml::Describe =
            quick_xml::de::from_str(&xml).expect("moto's DescribeInstances answer");
        parsed
            .reservations
            .items
            .into_iter()
            .flat_map(|r| r.instances.items)
            .map(|i| {
                let tags = i.tags.items.into_iter().map(|t| (t.key, t.value)).collect();
                (i.id, i.state.name, tags)
            })
            .collect()
    }

    /// The instances that are not terminated (or terminating).
    pub fn live_instances(&self) -> Vec<(String, String, Vec<(String, String)>)> {
        self.instances()
            .into_iter()
            .filter(|(_, state, _)| state != "terminated" && state != "shutting-down")
            .collect()
    }

    /// An instance's user data, decoded (what its startup script is).
    pub fn user_data(&self, instance_id: &str) -> String {
        let xml = self.ec2(&[
            ("Action", "DescribeInstanceAttribute"),
            ("InstanceId", instance_id),
            ("Attribute", "userData"),
        ]);
        let encoded = between(&xml, "<value>", "</value>").unwrap_or_default();
        String::from_utf8(decode_base64(&encoded)).unwrap()
    }

    /// Run `code` in Python with `ec2`, a boto3 EC2 client of this moto (AWS's own SDK, not
    /// our adapter); answers what it prints.
    pub fn boto3(&self, code: &str) -> String {
        let prelude = format!(
            "import boto3\nec2 = boto3.client('ec2', endpoint_url='{}', region_name='{REGION}', aws_access_key_id='AKIDTESTING', aws_secret_access_key='test-secret-key')\n",
            self.endpoint
        );
        let output = Command::new(python_tool("python"))
            .arg("-c")
            .arg(format!("{prelude}{code}"))
            .output()
            .expect("run python");
        assert!(
            output.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Forget every instance.
    pub fn reset(&self) {
        self.http
            .post(format!("{}/moto-api/reset", self.endpoint))
            .send()
            .unwrap();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(text[from..to].to_string())
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => 0,
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let n = chunk
            .iter()
            .fold(0u32, |n, &c| (n << 6) | u32::from(value(c)));
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

/// Just enough of EC2's XML for the tests' own checks.
mod xml {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Items<T> {
        #[serde(rename = "item", default = "Vec::new")]
        pub items: Vec<T>,
    }

    impl<T> Default for Items<T> {
        fn default() -> Self {
            Items { items: Vec::new() }
        }
    }

    #[derive(Deserialize)]
    pub struct Describe {
        #[serde(rename = "reservationSet", default)]
        pub reservations: Items<Reservation>,
    }

    #[derive(Deserialize)]
    pub struct Reservation {
        #[serde(rename = "instancesSet", default)]
        pub instances: Items<Instance>,
    }

    #[derive(Deserialize)]
    pub struct Instance {
        #[serde(rename = "instanceId")]
        pub id: String,
        #[serde(rename = "instanceState")]
        pub state: State,
        #[serde(rename = "tagSet", default)]
        pub tags: Items<Tag>,
    }

    #[derive(Deserialize)]
    pub struct State {
        pub name: String,
    }

    #[derive(Deserialize)]
    pub struct Tag {
        pub key: String,
        #[serde(default)]
        pub value: String,
    }
}
