//! SigV4 signing of Query API requests, by AWS's own signer (`aws-sigv4`, which is tested
//! against AWS's SigV4 test suite); `tests` checks our use of it against a published vector.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use crate::Config;

/// The headers to send with a `POST` of `body` (form-encoded) to `url`, signed for EC2 in
/// the config's region at `time`.
pub fn sign_post(
    config: &Config,
    url: &str,
    body: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let host = zonebroker_plugin_sdk::http::parse_url(url)
        .map_err(|e| e.0)?
        .authority
        .to_string();
    let mut headers = vec![
        ("host".to_string(), host),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
    ];
    let signed = signing_headers(
        "POST",
        url,
        &headers,
        body.as_bytes(),
        config.access_key_id,
        config.secret_access_key,
        config.region,
        "ec2",
        time,
    )?;
    headers.extend(signed);
    Ok(headers)
}

/// The headers SigV4 adds (`authorization`, `x-amz-date`, ...) for a request.
#[allow(clippy::too_many_arguments)]
pub fn signing_headers(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    access_key_id: &str,
    secret_access_key: &str,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity =
        Credentials::new(access_key_id, secret_access_key, None, None, "zonebroker").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// `get-vanilla` from AWS's SigV4 test suite: credentials `AKIDEXAMPLE` /
    /// `wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY`, 2015-08-30T12:36:00Z, us-east-1, service
    /// `service`, `GET /` to `example.amazonaws.com`.
    #[test]
    fn the_published_get_vanilla_vector() {
        let time = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let headers = vec![("host".to_string(), "example.amazonaws.com".to_string())];
        let signed = signing_headers(
            "GET",
            "https://example.amazonaws.com/",
            &headers,
            b"",
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "service",
            time,
        )
        .unwrap();
        let get = |name: &str| {
            signed
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            get("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
    }
}
