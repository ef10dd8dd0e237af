//! Names of things operators create (zones, plugins, pools, ...): one rule for all, so that
//! a name is always safe in a URL path, a log line and a cloud tag.

/// Why a name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name must not be empty")]
    Empty,
    #[error("a name has at most {max} characters, this one has {len}")]
    TooLong { len: usize, max: usize },
    #[error(
        "a name uses lowercase letters, digits and inner hyphens only (`{0}` is not allowed here)"
    )]
    BadCharacter(char),
}

/// The longest name accepted.
pub const MAX_LEN: usize = 63;

/// Accept `[a-z0-9]([a-z0-9-]*[a-z0-9])?`, at most [`MAX_LEN`] characters: a DNS label.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let len = name.chars().count();
    if len > MAX_LEN {
        return Err(NameError::TooLong { len, max: MAX_LEN });
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::BadCharacter(c));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::BadCharacter('-'));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_pass() {
        for ok in ["default", "east-1", "a", "least-load", "0"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn everything_else_is_refused_with_the_reason() {
        assert_eq!(validate(""), Err(NameError::Empty));
        assert_eq!(validate("East"), Err(NameError::BadCharacter('E')));
        assert_eq!(validate("a b"), Err(NameError::BadCharacter(' ')));
        assert_eq!(validate("a/b"), Err(NameError::BadCharacter('/')));
        assert_eq!(validate("-a"), Err(NameError::BadCharacter('-')));
        assert_eq!(validate("a-"), Err(NameError::BadCharacter('-')));
        assert_eq!(validate("é"), Err(NameError::BadCharacter('é')));
        assert_eq!(
            validate(&"a".repeat(64)),
            Err(NameError::TooLong { len: 64, max: 63 })
        );
    }
}
