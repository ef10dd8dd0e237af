//! A secret value (a password, a credential): kept as is where it is stored, never shown.
//!
//! One type for every secret field, so that no record needs a hand-written function that
//! blanks its secrets before it is shown (and a new secret field cannot be shown by
//! forgetting one):
//! - serialised, a secret is absent (`null`), unless the serialisation runs inside
//!   [`revealed`]: the store writes records that way (and a merge patch reads the record it
//!   applies to that way), so the stored JSON holds the value as a plain string;
//! - deserialised, it is the plain string (a request body, a stored record);
//! - `Debug` prints `Secret(<redacted>)`, and there is no `Display`: a secret in a log line or
//!   an error message does not compile or shows nothing;
//! - the code that needs the value (a directory bind, a VM's bootstrap) asks for it by name,
//!   with [`Secret::expose`].

use std::cell::Cell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret `T` (a `String` so far). See the module's description.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value itself: for the one place that must use it, never for a log or an answer.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_exposed(self) -> T {
        self.0
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

thread_local! {
    /// Whether serialisations on this thread write secrets' values (inside [`revealed`]).
    static REVEALED: Cell<bool> = const { Cell::new(false) };
}

/// Run `serialise` (synchronous: a `serde_json::to_vec` for the store, say) with every
/// [`Secret`] it meets written as its value; outside, a secret is written as absent.
pub fn revealed<R>(serialise: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            REVEALED.with(|revealed| revealed.set(self.0));
        }
    }
    let _restore = Restore(REVEALED.with(|revealed| revealed.replace(true)));
    serialise()
}

/// Whether this serialisation writes secrets' values (it runs inside [`revealed`]): for a
/// container of secrets that leaves them out rather than writing `null`.
pub fn is_revealed() -> bool {
    REVEALED.with(Cell::get)
}

impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if is_revealed() {
            self.0.serialize(serializer)
        } else {
            serializer.serialize_none()
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Record {
        name: String,
        #[serde(default)]
        password: Option<Secret>,
    }

    fn record() -> Record {
        Record {
            name: "ad".into(),
            password: Some(Secret::from("hunter2")),
        }
    }

    #[test]
    fn debug_is_redacted() {
        let shown = format!("{:?} {:#?}", Secret::from("hunter2"), record());
        assert!(shown.contains("Secret(<redacted>)"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn storage_serialises_the_value_as_a_plain_string() {
        let stored = revealed(|| serde_json::to_value(record()).unwrap());
        assert_eq!(stored, json!({ "name": "ad", "password": "hunter2" }));
        let read: Record = serde_json::from_value(stored).unwrap();
        assert_eq!(read, record());
        assert_eq!(read.password.unwrap().expose(), "hunter2");
    }

    #[test]
    fn the_public_view_leaves_it_out() {
        let shown = serde_json::to_value(record()).unwrap();
        assert_eq!(shown, json!({ "name": "ad", "password": null }));
        assert!(
            !serde_json::to_string(&record())
                .unwrap()
                .contains("hunter2")
        );
    }

    #[test]
    fn revealed_ends_with_its_closure_even_on_a_panic() {
        revealed(|| ());
        assert_eq!(
            serde_json::to_value(Secret::from("x")).unwrap(),
            json!(null)
        );
        let panicked = std::panic::catch_unwind(|| revealed(|| panic!("serialiser failed")));
        assert!(panicked.is_err());
        assert_eq!(
            serde_json::to_value(Secret::from("x")).unwrap(),
            json!(null)
        );
        // Nested: the inner end does not hide what the outer one still reveals.
        let nested = revealed(|| {
            revealed(|| ());
            serde_json::to_value(Secret::from("x")).unwrap()
        });
        assert_eq!(nested, json!("x"));
    }
}
