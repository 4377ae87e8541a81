//! Validated identifiers for projects and objects.
//!
//! Both share one charset (`[A-Za-z0-9_.:-]`, 1–128 chars). Keeping them as newtypes means a string that
//! reached Redis key construction or a DynamoDB key has always passed this check first.

use std::fmt;

/// Longest id accepted for projects and objects.
pub const MAX_ID_LEN: usize = 128;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id must not be empty")]
    Empty,
    #[error("id is {0} characters long; at most {MAX_ID_LEN} are allowed")]
    TooLong(usize),
    #[error("id contains {0:?}; only letters, digits and _ . : - are allowed")]
    BadChar(char),
}

fn check(raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty);
    }
    if raw.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(raw.chars().count()));
    }
    match raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A validated ", $what, " id.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks the charset and length.
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                check(&raw)?;
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(ProjectId, "project");
id_type!(ObjectId, "object");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_charset() {
        assert!(ProjectId::parse("p1_A.b:c-d").is_ok());
        assert!(ProjectId::parse("a".repeat(128)).is_ok());
    }

    #[test]
    fn refuses_empty_long_and_foreign_characters() {
        assert_eq!(ProjectId::parse(""), Err(IdError::Empty));
        assert_eq!(
            ProjectId::parse("a".repeat(129)),
            Err(IdError::TooLong(129))
        );
        assert_eq!(ObjectId::parse("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(ObjectId::parse("{x}"), Err(IdError::BadChar('{')));
        assert_eq!(ObjectId::parse("é"), Err(IdError::BadChar('é')));
    }
}
