//! A [`DurableStore`] wrapper that refuses, as DynamoDB does, a write of an item that breaks DynamoDB's
//! documented item rules, so that tests on an emulator (dynalite checks none of them) can rely on refusals.
//!
//! The rules are written from AWS's documentation, independently of the door's own checks in
//! `crate::object`, so that a test comparing the two means something:
//! - naming rules: an attribute name (top-level or a map key) is 1 to 65535 bytes of UTF-8;
//! - data types: a number has at most 38 significant digits (leading and trailing zeros trimmed) and a
//!   magnitude of 0 or from 1E-130 to 9.9999999999999999999999999999999999999E+125; key attributes of type
//!   string are not empty;
//! - nested attributes: at most 32 levels deep, a top-level attribute being level 1;
//! - item size: at most 400 KB (binary units, 409,600 bytes), the sum of every attribute name and value as
//!   "item sizes and formats" sizes them. A number's size is documented as approximate ("1 byte per two
//!   significant digits, plus 1 byte"); this validator reads it on the high side (one more byte for rounding,
//!   one more for a negative sign), so that what it accepts DynamoDB accepts.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{to_item, OBJECT_KEY, PROJECT_KEY};
use super::{DurableError, DurableStore, ItemWrite, LoadedProject, WriteOp, WriteOutcome};
use crate::cause::Cause;
use crate::ids::ProjectId;
use crate::stored::StoredObject;

/// Most bytes in an item (400 KB; DynamoDB's KB is 1024 bytes).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// Most levels of nested attributes, a top-level attribute being level 1.
pub const MAX_NESTING_LEVELS: usize = 32;
const MAX_ATTRIBUTE_NAME_BYTES: usize = 65535;
const MAX_NUMBER_DIGITS: usize = 38;
/// Overhead of a list or a map, and of each of their elements.
const CONTAINER_OVERHEAD: usize = 3;
const ELEMENT_OVERHEAD: usize = 1;

/// Why DynamoDB would refuse an item, worded like its ValidationException messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemViolation {
    #[error("One or more parameter values were invalid: an attribute name is empty")]
    EmptyName,
    #[error(
        "One or more parameter values were invalid: an attribute name is {0} bytes, over 65535"
    )]
    NameTooLong(usize),
    #[error("One or more parameter values were invalid: a key attribute is an empty string")]
    EmptyKey,
    #[error("Attempting to store more than 38 significant digits in a Number: {0}")]
    TooManyDigits(String),
    #[error("Number overflow. Attempting to store a number with magnitude larger than supported range: {0}")]
    NumberOverflow(String),
    #[error("Number underflow. Attempting to store a number with magnitude smaller than supported range: {0}")]
    NumberUnderflow(String),
    #[error("The parameter cannot be converted to a numeric value: {0}")]
    NotANumber(String),
    #[error("Nesting Levels have exceeded supported limits")]
    TooDeep,
    #[error("Item size has exceeded the maximum allowed size ({0} bytes)")]
    TooLarge(usize),
}

/// Checks a whole item against the rules above.
pub fn check_item(item: &HashMap<String, AttributeValue>) -> Result<(), ItemViolation> {
    for key in [PROJECT_KEY, OBJECT_KEY] {
        if matches!(item.get(key), Some(AttributeValue::S(s)) if s.is_empty()) {
            return Err(ItemViolation::EmptyKey);
        }
    }
    let mut size = 0;
    for (name, value) in item {
        size += name_size(name)? + value_size(value, 1)?;
    }
    if size > MAX_ITEM_BYTES {
        return Err(ItemViolation::TooLarge(size));
    }
    Ok(())
}

/// The size of an item as DynamoDB counts it (read on the high side for numbers); None when the item breaks
/// another rule first.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> Option<usize> {
    item.iter().try_fold(0, |total, (name, value)| {
        Some(total + name_size(name).ok()? + value_size(value, 1).ok()?)
    })
}

/// Checks the item the durable store would write for `object` of `project`.
pub fn check_object(project: &ProjectId, object: &StoredObject) -> Result<(), ItemViolation> {
    check_item(&to_item(project, object))
}

fn name_size(name: &str) -> Result<usize, ItemViolation> {
    match name.len() {
        0 => Err(ItemViolation::EmptyName),
        n if n > MAX_ATTRIBUTE_NAME_BYTES => Err(ItemViolation::NameTooLong(n)),
        n => Ok(n),
    }
}

/// The size of one value at nesting `level` (a top-level attribute's value is level 1).
fn value_size(value: &AttributeValue, level: usize) -> Result<usize, ItemViolation> {
    if level > MAX_NESTING_LEVELS {
        return Err(ItemViolation::TooDeep);
    }
    Ok(match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n)?,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(items) => {
            let mut size = CONTAINER_OVERHEAD;
            for item in items {
                size += ELEMENT_OVERHEAD + value_size(item, level + 1)?;
            }
            size
        }
        AttributeValue::M(map) => {
            let mut size = CONTAINER_OVERHEAD;
            for (name, item) in map {
                size += ELEMENT_OVERHEAD + name_size(name)? + value_size(item, level + 1)?;
            }
            size
        }
        AttributeValue::Ss(items) => items.iter().map(String::len).sum(),
        AttributeValue::Ns(items) => {
            let mut size = 0;
            for n in items {
                size += number_size(n)?;
            }
            size
        }
        AttributeValue::Bs(items) => items.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    })
}

/// Validates a number's text and returns its size.
fn number_size(text: &str) -> Result<usize, ItemViolation> {
    let not_a_number = || ItemViolation::NotANumber(text.to_string());
    let negative = text.starts_with('-');
    let body = text.trim_start_matches(['-', '+']);
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().map_err(|_| not_a_number())?),
        None => (body, 0),
    };
    // Digits with the position of the decimal point among them.
    let mut digits = String::new();
    let mut point = None;
    for c in mantissa.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '.' if point.is_none() => point = Some(digits.len()),
            _ => return Err(not_a_number()),
        }
    }
    if digits.is_empty() {
        return Err(not_a_number());
    }
    let point = point.unwrap_or(digits.len()) as i64;
    let leading_zeros = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_matches('0');
    if significant.is_empty() {
        return Ok(2); // zero
    }
    if significant.len() > MAX_NUMBER_DIGITS {
        return Err(ItemViolation::TooManyDigits(text.to_string()));
    }
    // Scientific exponent: the power of ten of the first significant digit.
    let scientific = point - leading_zeros as i64 - 1 + exponent;
    if scientific > 125 {
        return Err(ItemViolation::NumberOverflow(text.to_string()));
    }
    if scientific < -130 {
        return Err(ItemViolation::NumberUnderflow(text.to_string()));
    }
    Ok(significant.len() / 2 + 2 + usize::from(negative))
}

/// Refuses each item DynamoDB would refuse, as DynamoDB's PutItem does (a ValidationException about that item),
/// and writes the others.
pub struct ValidatingStore<S> {
    inner: S,
}

impl<S: DurableStore> ValidatingStore<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl<S: DurableStore> DurableStore for ValidatingStore<S> {
    async fn write_batch(&self, writes: &[ItemWrite]) -> Result<WriteOutcome, DurableError> {
        let mut refused = Vec::new();
        let mut valid = Vec::with_capacity(writes.len());
        for write in writes {
            let violation = match &write.op {
                WriteOp::Put(object) => check_object(&write.project, object).err(),
                WriteOp::Delete(_) => None,
            };
            match violation {
                Some(violation) => refused.push((
                    write.clone(),
                    DurableError::ItemRefused(Cause::described(format!(
                        "ValidationException: {violation} (object {})",
                        write.object_id()
                    ))),
                )),
                None => valid.push(write.clone()),
            }
        }
        let mut outcome = self.inner.write_batch(&valid).await?;
        outcome.refused.extend(refused);
        Ok(outcome)
    }

    async fn load_project(&self, project: &ProjectId) -> Result<LoadedProject, DurableError> {
        self.inner.load_project(project).await
    }

    async fn persist_seq(&self, project: &ProjectId, seq: u64) -> Result<(), DurableError> {
        self.inner.persist_seq(project, seq).await
    }

    async fn ensure_table(&self, create: bool) -> Result<(), DurableError> {
        self.inner.ensure_table(create).await
    }

    async fn ping(&self) -> Result<(), DurableError> {
        self.inner.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Result<usize, ItemViolation> {
        number_size(text)
    }

    #[test]
    fn numbers_follow_the_documented_range_and_precision() {
        for ok in [
            "0",
            "-0.0",
            "1E-130",
            "-1e-130",
            "9.9999999999999999999999999999999999999E+125",
            "12345678901234567890123456789012345678",
            "0.00000000000000000000000000000000000000000012345678901234567890123456789012345678",
            "100000000000000000000000000000000000000000000000000",
            "1.5",
        ] {
            assert!(n(ok).is_ok(), "{ok}: {:?}", n(ok));
        }
        for (bad, kind) in [
            ("1e126", "overflow"),
            ("10E125", "overflow"),
            ("9.99e-131", "underflow"),
            ("123456789012345678901234567890123456789", "digits"),
            ("1.23456789012345678901234567890123456789", "digits"),
            ("abc", "nan"),
            ("1e", "nan"),
            ("", "nan"),
        ] {
            let got = n(bad);
            let matches = match kind {
                "overflow" => matches!(got, Err(ItemViolation::NumberOverflow(_))),
                "underflow" => matches!(got, Err(ItemViolation::NumberUnderflow(_))),
                "digits" => matches!(got, Err(ItemViolation::TooManyDigits(_))),
                _ => matches!(got, Err(ItemViolation::NotANumber(_))),
            };
            assert!(matches, "{bad}: {got:?}");
        }
    }

    #[test]
    fn names_nesting_and_size_follow_the_documented_rules() {
        let item = |name: &str, value: AttributeValue| HashMap::from([(name.to_string(), value)]);
        assert_eq!(
            check_item(&item("", AttributeValue::Null(true))),
            Err(ItemViolation::EmptyName)
        );
        let nested_empty = AttributeValue::M(HashMap::from([(
            String::new(),
            AttributeValue::N("1".into()),
        )]));
        assert_eq!(
            check_item(&item("style", nested_empty)),
            Err(ItemViolation::EmptyName)
        );
        let wrap = |levels: usize| {
            (0..levels).fold(AttributeValue::S("leaf".into()), |v, _| {
                AttributeValue::L(vec![v])
            })
        };
        assert!(check_item(&item("deep", wrap(31))).is_ok());
        assert_eq!(
            check_item(&item("deep", wrap(32))),
            Err(ItemViolation::TooDeep)
        );
        let name = "n".repeat(10);
        let fits = AttributeValue::S("x".repeat(MAX_ITEM_BYTES - name.len()));
        assert!(check_item(&item(&name, fits)).is_ok());
        let over = AttributeValue::S("x".repeat(MAX_ITEM_BYTES - name.len() + 1));
        assert!(matches!(
            check_item(&item(&name, over)),
            Err(ItemViolation::TooLarge(_))
        ));
    }
}
