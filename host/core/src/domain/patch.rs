//! JSON Merge Patch (RFC 7396) of stored entities: `PATCH` bodies name only what changes;
//! `null` removes an optional field.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::validation::{self, FieldError};

/// Apply `patch` to `target` in place (RFC 7396 §2).
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let fields = target.as_object_mut().expect("made an object above");
    for (name, change) in changes {
        if change.is_null() {
            fields.remove(name);
        } else {
            merge(fields.entry(name.clone()).or_insert(Value::Null), change);
        }
    }
}

/// `current` with `patch` merged in, read back as a `T`: a type error names the field.
pub fn apply<T: Serialize + DeserializeOwned>(current: &T, patch: &Value) -> Result<T, FieldError> {
    // The stored record, secrets included: a patch that leaves one out keeps it.
    let mut value = super::secret::revealed(|| serde_json::to_value(current))
        .expect("domain records serialize");
    merge(&mut value, patch);
    from_value(value)
}

/// Read `value` as a `T`, naming the failing field on error.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        FieldError::new(validation::serde_error_field(&message, &path), message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[test]
    fn merge_follows_rfc_7396() {
        // The examples of RFC 7396, appendix A.
        for (target, patch, expected) in [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ] {
            let mut merged = target.clone();
            merge(&mut merged, &patch);
            assert_eq!(merged, expected, "{target} + {patch}");
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Thing {
        name: String,
        size: u32,
        #[serde(default)]
        note: Option<String>,
    }

    #[test]
    fn apply_names_the_field_a_patch_breaks() {
        let thing = Thing {
            name: "a".into(),
            size: 1,
            note: Some("n".into()),
        };
        let patched: Thing = apply(&thing, &json!({"size": 2, "note": null})).unwrap();
        assert_eq!(
            patched,
            Thing {
                name: "a".into(),
                size: 2,
                note: None
            }
        );
        assert_eq!(
            apply(&thing, &json!({"size": "big"})).unwrap_err().field,
            "size"
        );
        assert_eq!(
            apply(&thing, &json!({"colour": 1})).unwrap_err().field,
            "colour"
        );
        assert_eq!(
            apply(&thing, &json!({"name": null})).unwrap_err().field,
            "name"
        );
    }
}
