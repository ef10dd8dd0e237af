//! Durations as operators type them: a number of seconds (`90`, `0.5`) or a number with a
//! unit (`500ms`, `10s`, `5m`, `2h`), in flags and in API fields alike. The API answers them
//! as numbers of seconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer};
#[cfg(feature = "openapi")]
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
#[cfg(feature = "openapi")]
use utoipa::openapi::{RefOr, schema};

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error(
        "`{0}` is not a duration: give seconds (`90`, `0.5`) or a number with a unit (`500ms`, `10s`, `5m`, `2h`)"
    )]
    Syntax(String),
    #[error("`{0}` is not a whole number of seconds")]
    NotWholeSeconds(String),
    #[error("`{text}` is out of range: from {min} to {max}")]
    Range {
        text: String,
        min: String,
        max: String,
    },
}

/// Parse `text`: seconds, or a number followed by `ms`, `s`, `m` or `h` (spaces around the
/// unit allowed). Negative, infinite and NaN values are refused.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_string());
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number = number.trim();
    // Plain decimal numbers only: no sign, exponent, `inf` or `nan`.
    if number.is_empty()
        || !number.chars().all(|c| c.is_ascii_digit() || c == '.')
        || number.starts_with('.')
        || number.ends_with('.')
    {
        return Err(syntax());
    }
    let value: f64 = number.parse().map_err(|_| syntax())?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        _ => return Err(syntax()),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| syntax())
}

/// [`parse`], within `min..=max`.
pub fn parse_within(text: &str, min: Duration, max: Duration) -> Result<Duration, DurationError> {
    let duration = parse(text)?;
    if duration < min || duration > max {
        return Err(DurationError::Range {
            text: text.to_string(),
            min: display(min),
            max: display(max),
        });
    }
    Ok(duration)
}

/// A duration as a flag's help shows it: `100ms`, `10s`, `5m`.
pub fn display(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms % 60_000 == 0 && ms >= 60_000 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Serde for API fields kept as whole seconds (`u64`): accepts a number of seconds or a
/// string with a unit; answers the number. Use with `#[serde(deserialize_with =
/// "duration::whole_seconds")]` and `#[schema(schema_with = duration::seconds_schema)]` (behind the `openapi` feature).
pub fn whole_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Input {
        Seconds(u64),
        Text(String),
    }
    match Input::deserialize(deserializer) {
        Ok(Input::Seconds(seconds)) => Ok(seconds),
        Ok(Input::Text(text)) => {
            let duration = parse(&text).map_err(serde::de::Error::custom)?;
            if duration.subsec_nanos() != 0 {
                return Err(serde::de::Error::custom(DurationError::NotWholeSeconds(
                    text,
                )));
            }
            Ok(duration.as_secs())
        }
        Err(_) => Err(serde::de::Error::custom(
            "expected a whole number of seconds or a duration such as `90s`, `10m`, `1h`",
        )),
    }
}

/// The OpenAPI schema of a [`whole_seconds`] field: an integer of seconds, or a string with a
/// unit on input.
#[cfg(feature = "openapi")]
pub fn seconds_schema() -> Schema {
    Schema::OneOf(
        OneOfBuilder::new()
            .item(RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::Integer))
                    .format(Some(schema::SchemaFormat::KnownFormat(
                        schema::KnownFormat::Int64,
                    )))
                    .minimum(Some(0))
                    .description(Some("seconds"))
                    .build(),
            )))
            .item(RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::String))
                    .pattern(Some(
                        r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|sec|secs|m|min|mins|h)?\s*$",
                    ))
                    .description(Some("a duration with a unit: `500ms`, `10s`, `5m`, `2h`"))
                    .build(),
            )))
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_operators_type_them() {
        let s = Duration::from_secs;
        assert_eq!(parse("10"), Ok(s(10)));
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(s(10)));
        assert_eq!(parse(" 5m "), Ok(s(300)));
        assert_eq!(parse("5 min"), Ok(s(300)));
        assert_eq!(parse("2h"), Ok(s(7200)));
        assert_eq!(parse("0.25s"), Ok(Duration::from_millis(250)));
        for bad in [
            "", "s", "-1", "-1s", "1d", "1e3", "inf", "NaN", "1..2", ".5", "5.", "1 2s", "10sx",
        ] {
            assert!(
                matches!(parse(bad), Err(DurationError::Syntax(_))),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn a_range_says_its_bounds_as_durations() {
        let range = (Duration::from_millis(50), Duration::from_secs(3600));
        assert_eq!(
            parse_within("1s", range.0, range.1),
            Ok(Duration::from_secs(1))
        );
        let error = parse_within("2h", range.0, range.1).unwrap_err();
        assert_eq!(error.to_string(), "`2h` is out of range: from 50ms to 60m");
    }

    #[test]
    fn api_fields_take_seconds_or_a_unit_and_refuse_fractions() {
        #[derive(Deserialize, Debug)]
        struct Field {
            #[serde(deserialize_with = "whole_seconds")]
            timeout: u64,
        }
        let read = |json: &str| serde_json::from_str::<Field>(json).map(|f| f.timeout);
        assert_eq!(read(r#"{"timeout": 600}"#).unwrap(), 600);
        assert_eq!(read(r#"{"timeout": "10m"}"#).unwrap(), 600);
        assert_eq!(read(r#"{"timeout": "600"}"#).unwrap(), 600);
        assert_eq!(read(r#"{"timeout": "2000ms"}"#).unwrap(), 2);
        assert!(
            read(r#"{"timeout": "1500ms"}"#)
                .unwrap_err()
                .to_string()
                .contains("whole number of seconds")
        );
        assert!(read(r#"{"timeout": -1}"#).is_err());
        assert!(read(r#"{"timeout": true}"#).is_err());
        assert!(read(r#"{"timeout": "soon"}"#).is_err());
    }
}
