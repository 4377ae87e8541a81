//! The edit script's merge patch (`json.lua`), in Rust and on the same raw texts.
//!
//! Merging in Lua is most of what an update costs Redis, on the one core that cannot be added to. A gateway that
//! holds the object's current text merges here instead, and the script only checks that the stored text is still
//! that one. Both sides split the top level of an object into raw key and value texts and recurse only where the
//! patch does, so the same object and patch give the same bytes whichever side merged: a gateway can follow a
//! merge the script did from the broadcast alone. Input is always serde_json's compact output; anything else
//! gives `None` and the script merges.

use std::borrow::Cow;

/// An object split at its top level: raw key texts (quotes included) in order, each with its raw value text, or
/// `None` once a patch removed it.
pub(crate) struct RawObject<'a> {
    entries: Vec<(&'a str, Option<Cow<'a, str>>)>,
}

impl<'a> RawObject<'a> {
    pub(crate) fn parse(s: &'a str) -> Option<Self> {
        let bytes = s.as_bytes();
        let mut object = Self {
            entries: Vec::new(),
        };
        if bytes.first() != Some(&b'{') {
            return None;
        }
        let mut i = 1;
        if bytes.get(i) == Some(&b'}') {
            return Some(object);
        }
        loop {
            if bytes.get(i) != Some(&b'"') {
                return None;
            }
            let key_end = skip_string(bytes, i)?;
            let key = s.get(i..key_end)?;
            if bytes.get(key_end) != Some(&b':') {
                return None;
            }
            let value_end = skip_value(bytes, key_end + 1)?;
            // As in Lua: a repeated key keeps its first place and its last value.
            object.set(key, Cow::Borrowed(s.get(key_end + 1..value_end)?));
            match bytes.get(value_end) {
                Some(b'}') => return Some(object),
                Some(b',') => i = value_end + 1,
                _ => return None,
            }
        }
    }

    /// The raw value text of `key` (quotes included in the key).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Sets `key` in its place, or at the end when the object never had it (as in Lua, a key a patch removed keeps
    /// its place).
    fn set(&mut self, key: &'a str, value: Cow<'a, str>) {
        let value = Some(value);
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.entries.push((key, value)),
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((_, v)) = self.entries.iter_mut().find(|(k, _)| *k == key) {
            *v = None;
        }
    }

    /// RFC 7396, in place: a value is parsed only where the patch recurses into it.
    fn merge(&mut self, patch: &RawObject<'a>) -> Option<()> {
        for (key, value) in &patch.entries {
            let Some(value) = value else { continue };
            if value == "null" {
                self.remove(key);
            } else {
                let merged = merge_value(self.get(key), value)?;
                self.set(key, Cow::Owned(merged));
            }
        }
        Some(())
    }

    fn serialize(&self) -> String {
        let mut out = String::with_capacity(
            2 + self
                .entries
                .iter()
                .map(|(k, v)| k.len() + 2 + v.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>(),
        );
        out.push('{');
        // Keys are unique: `parse` folds repeats and `set` writes in place.
        for (key, value) in &self.entries {
            let Some(value) = value else { continue };
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(key);
            out.push(':');
            out.push_str(value);
        }
        out.push('}');
        out
    }
}

fn merge_value(target: Option<&str>, patch: &str) -> Option<String> {
    if !patch.starts_with('{') {
        return Some(patch.to_string());
    }
    let mut merged = match target {
        Some(t) if t.starts_with('{') => RawObject::parse(t)?,
        _ => RawObject {
            entries: Vec::new(),
        },
    };
    merged.merge(&RawObject::parse(patch)?)?;
    Some(merged.serialize())
}

/// The index just past the string starting at `i` (a `"`).
fn skip_string(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        let k = j + s.get(j..)?.iter().position(|&b| b == b'"' || b == b'\\')?;
        if s[k] == b'\\' {
            j = k + 2;
        } else {
            return Some(k + 1);
        }
    }
}

/// The index just past the value starting at `i`.
fn skip_value(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'"' => skip_string(s, i),
        b'{' | b'[' => {
            let (mut depth, mut j) = (0usize, i);
            loop {
                let k = j + s
                    .get(j..)?
                    .iter()
                    .position(|&b| matches!(b, b'[' | b']' | b'{' | b'}' | b'"'))?;
                match s[k] {
                    b'"' => j = skip_string(s, k)?,
                    b'{' | b'[' => {
                        depth += 1;
                        j = k + 1;
                    }
                    _ => {
                        depth = depth.checked_sub(1)?;
                        j = k + 1;
                        if depth == 0 {
                            return Some(j);
                        }
                    }
                }
            }
        }
        _ => Some(
            i + s[i..]
                .iter()
                .position(|&b| matches!(b, b',' | b'}' | b']'))
                .unwrap_or(s.len() - i),
        ),
    }
}

const VERSION_KEY: &str = "\"version\"";
const TYPE_KEY: &str = "\"type\"";

/// The object's text after an update, and its new version, exactly as the edit script would write them; `None`
/// when the script must decide instead (a refusal: a `type` change or another version than `if_version`), or
/// when either text is not what the script reads.
pub(crate) fn merged_update(
    current: &str,
    patch: &str,
    if_version: Option<u64>,
) -> Option<(String, u64)> {
    let mut object = RawObject::parse(current)?;
    let version = match object.get(VERSION_KEY) {
        Some(v) => v.parse::<u64>().ok()?,
        None => 0,
    };
    if if_version.is_some_and(|required| required != version) {
        return None;
    }
    let patch = RawObject::parse(patch)?;
    if let Some(new_type) = patch.get(TYPE_KEY) {
        if object.get(TYPE_KEY) != Some(new_type) {
            return None;
        }
    }
    let next = version + 1;
    object.merge(&patch)?;
    object.set(VERSION_KEY, Cow::Owned(next.to_string()));
    Some((object.serialize(), next))
}

/// The object's version as the edit script reads it.
pub(crate) fn version_of(object: &str) -> Option<u64> {
    match RawObject::parse(object)?.get(VERSION_KEY) {
        Some(v) => v.parse().ok(),
        None => Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_keeps_the_order_and_appends_new_keys() {
        let (merged, version) = merged_update(
            r##"{"fill":"#888","id":"a","type":"rect","x":0,"version":1}"##,
            r#"{"lg":{"n":1,"t":null},"x":5,"fill":null}"#,
            None,
        )
        .expect("merges");
        assert_eq!(
            merged,
            r#"{"id":"a","type":"rect","x":5,"version":2,"lg":{"n":1}}"#
        );
        assert_eq!(version, 2);
    }

    #[test]
    fn nested_objects_merge_and_other_values_replace() {
        let (merged, _) = merged_update(
            r#"{"a":{"b":1,"c":[1,{"d":"}"}]},"e":"x\"y","version":7}"#,
            r#"{"a":{"b":{"z":2},"c":null},"e":[]}"#,
            Some(7),
        )
        .expect("merges");
        assert_eq!(merged, r#"{"a":{"b":{"z":2}},"e":[],"version":8}"#);
    }

    #[test]
    fn refusals_and_unreadable_texts_are_left_to_the_script() {
        let current = r#"{"id":"a","type":"rect","version":3}"#;
        assert!(merged_update(current, r#"{"type":"ellipse"}"#, None).is_none());
        assert!(merged_update(current, r#"{"x":1}"#, Some(2)).is_none());
        assert!(merged_update(current, r#"{"x":1}"#, Some(3)).is_some());
        assert!(merged_update(r#"{"id":"a","#, r#"{"x":1}"#, None).is_none());
        assert!(merged_update(current, r#"{"x":1"#, None).is_none());
        assert!(merged_update(r#"{ "id":"a"}"#, r#"{"x":1}"#, None).is_none());
        assert_eq!(version_of(current), Some(3));
    }
}
