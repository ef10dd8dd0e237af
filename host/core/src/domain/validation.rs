//! Field-level validation errors and the small checks shared by every entity.

/// A request field that is wrong, and why. The API answers it as a 422 naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field's name in the request body.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The request field a serde data error is about: serde names an unknown or missing field
/// in its message, not in the path (`path` is where the error arose, `.` at the top).
pub fn serde_error_field(message: &str, path: &str) -> String {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match (named, path) {
        (Some(name), "." | "") => name.to_string(),
        (Some(name), path) if path == name || path.ends_with(&format!(".{name}")) => {
            path.to_string()
        }
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, path) => path.to_string(),
    }
}

/// A name that follows [`super::names::validate`].
pub fn name(field: &str, value: &str) -> Result<(), FieldError> {
    super::names::validate(value).map_err(|e| FieldError::new(field, e.to_string()))
}

/// Free text for a display field: 1 to `max` characters, no control characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(field, format!("at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// `host[:port]` split into its host and port; the port, if any, from 1 to 65535.
pub fn split_authority<'a>(
    field: &str,
    value: &'a str,
) -> Result<(&'a str, Option<u16>), FieldError> {
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => (host, Some(port)),
        _ => (value, None),
    };
    match port {
        None => Ok((host, None)),
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok((host, Some(port))),
            _ => Err(FieldError::new(
                field,
                format!("`{value}`: the port must be a number from 1 to 65535"),
            )),
        },
    }
}

/// `host[:port]`: a host name or IP address, and an optional port from 1 to 65535.
pub fn authority(field: &str, value: &str) -> Result<(), FieldError> {
    let (host_part, _) = split_authority(field, value)?;
    host(field, host_part)
}

/// A user name that reaches `.rdp` files (one `name:type:value` per CRLF line) and startup
/// scripts: 1 to 256 characters, no control characters (so no CR or LF that would add a line).
pub fn username(field: &str, value: &str) -> Result<(), FieldError> {
    text(field, value, 256)
}

/// A host name or IP address as it may appear in a URL authority: letters, digits, `.`, `-`,
/// `_`, or an IPv6 address (with or without brackets). At most 253 characters.
pub fn host(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > 253 {
        return Err(FieldError::new(
            field,
            "a host name or IP address of 1 to 253 characters",
        ));
    }
    let bare = value.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(());
    }
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("`{value}` is not a host name or IP address"),
        ))
    }
}

/// The most cores any one agent or session may have. (Kept where a float still resolves
/// 1e-10: the API promises exact bounds, and a larger bound would round.)
pub const MAX_CORES: f64 = 100_000.0;

/// A non-negative, finite number of cores (fractions allowed), at most [`MAX_CORES`].
pub fn cores(field: &str, value: f64) -> Result<(), FieldError> {
    if value.is_finite() && (0.0..=MAX_CORES).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "cores must be a number from 0 to 100000",
        ))
    }
}

/// A count or size that fits the API's documented integer formats: `int64` for bytes,
/// `int32` for counts (the OpenAPI document promises no more).
pub fn int64(field: &str, value: u64) -> Result<(), FieldError> {
    if value <= i64::MAX as u64 {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("at most {}", i64::MAX)))
    }
}

/// See [`int64`].
pub fn int32(field: &str, value: u32) -> Result<(), FieldError> {
    if value <= i32::MAX as u32 {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("at most {}", i32::MAX)))
    }
}

/// A fraction from 0 to 1.
pub fn fraction(field: &str, value: f64) -> Result<(), FieldError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(field, "must be a fraction from 0 to 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in [
            "east.example.com",
            "10.0.0.1",
            "::1",
            "[fe80::1]",
            "agent_7",
            "$request_host$".trim_matches('$'),
        ] {
            assert_eq!(host("h", ok), Ok(()), "{ok}");
        }
        for bad in ["", "a b", "a/b", "http://x", "x:80"] {
            assert!(host("h", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usernames_take_no_line_breaks_or_control_characters() {
        for ok in ["kasm", "EXAMPLE\\bob", "bob@example.com", "Zoë Müller"] {
            assert_eq!(username("u", ok), Ok(()), "{ok}");
        }
        for bad in [
            "bob\r\nfull address:s:evil",
            "bob\nx",
            "bob\rx",
            "a\u{0}b",
            "tab\there",
            "del\u{7f}",
            "",
        ] {
            assert_eq!(username("u", bad).unwrap_err().field, "u", "{bad:?}");
        }
        assert!(username("u", &"a".repeat(257)).is_err());
    }

    #[test]
    fn numbers() {
        assert!(cores("c", 0.5).is_ok());
        assert!(cores("c", -1.0).is_err());
        assert!(cores("c", f64::NAN).is_err());
        assert!(fraction("f", 1.0).is_ok());
        assert!(fraction("f", 1.5).is_err());
        assert!(text("t", "ok", 3).is_ok());
        assert!(text("t", "long", 3).is_err());
        assert!(text("t", "a\nb", 9).is_err());
    }
}

/// For `PATCH` bodies: a field that is present (possibly `null`) as `Some`, an absent one as
/// `None` (`#[serde(default, deserialize_with = "present")]`), so `null` can clear a setting.
pub fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}
