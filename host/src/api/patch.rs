//! JSON Merge Patch (RFC 7396) of records: `PATCH` bodies name only what changes; `null`
//! removes an optional field. Applied here, at the API's edge: the broker receives the
//! typed record a patch makes, and the patched record is as strict as a request body.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::broker::Change;
use crate::domain::secret;
use crate::domain::validation::FieldError;

/// A `PATCH` body: a JSON merge patch of the record's API body `A`, applied to whichever
/// record the broker holds (shown as an `A`, patched, read back as strictly as a request).
pub struct MergePatch<A> {
    patch: Value,
    body: PhantomData<fn() -> A>,
}

impl<A> MergePatch<A> {
    pub fn new(patch: Value) -> Self {
        MergePatch {
            patch,
            body: PhantomData,
        }
    }
}

impl<T: Clone, A: From<T> + Into<T> + Serialize + DeserializeOwned> Change<T> for MergePatch<A> {
    fn apply(&self, current: &T) -> Result<T, FieldError> {
        let body = A::from(current.clone());
        apply(&body, &self.patch).map(Into::into)
    }

    fn names(&self, path: &[&str]) -> bool {
        let mut value = &self.patch;
        for field in path {
            match value.get(field) {
                Some(inner) => value = inner,
                None => return false,
            }
        }
        true
    }
}

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

/// `current` with `patch` merged in, read back as a `T` as strictly as a request body: a
/// type error or an unknown field names the field.
pub fn apply<T: Serialize + DeserializeOwned>(current: &T, patch: &Value) -> Result<T, FieldError> {
    // The current record, secrets included: a patch that leaves one out keeps it.
    let mut value = secret::revealed(|| serde_json::to_value(current)).expect("records serialize");
    merge(&mut value, patch);
    super::json::strict(value)
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

    /// Tolerant of unknown fields, as stored records are.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
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
