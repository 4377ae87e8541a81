//! The part of the public WebSocket protocol the load generator speaks: parsing server
//! frames (without allocating for the common case) and writing `create` / `update` frames.
//!
//! Only public protocol fields are used (see docs/protocol.md); this crate does not depend on
//! the server's crates on purpose.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::de::{Deserializer, Visitor};
use serde::Deserialize;

/// A JSON string that borrows from the frame when it has no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(Text)
    }
}

impl Text<'_> {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The load generator's stamp inside every patch it sends: `"lg":{"t":..,"c":..,"n":..}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Stamp<'a> {
    /// Unix microseconds when the edit was issued.
    pub t: u64,
    /// `{run id}-{global client index}`.
    #[serde(borrow)]
    pub c: Text<'a>,
    /// Per-client edit number (also the reqId).
    pub n: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Patch<'a> {
    #[serde(borrow, default)]
    pub lg: Option<Stamp<'a>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ObjectRef<'a> {
    #[serde(borrow)]
    pub id: Text<'a>,
}

/// Any server frame, reduced to the fields the load generator reads.
#[derive(Debug, Deserialize)]
pub(crate) struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Text<'a>,
    #[serde(rename = "reqId", borrow, default)]
    pub req_id: Option<Text<'a>>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(borrow, default)]
    pub code: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub patch: Option<Patch<'a>>,
    /// Only in `snapshot`.
    #[serde(borrow, default)]
    pub objects: Option<Vec<ObjectRef<'a>>>,
}

/// Fallback when a frame has the common fields but odd extras (e.g. a foreign client's
/// patch whose `lg` has another shape): keep `seq`, `reqId` and `code` at least.
#[derive(Debug, Deserialize)]
struct MinimalFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(rename = "reqId", borrow, default)]
    req_id: Option<Text<'a>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    code: Option<Text<'a>>,
}

/// Parses a server text frame; `None` when it is not a JSON object with a string `type`.
pub(crate) fn parse(text: &str) -> Option<Frame<'_>> {
    if let Ok(f) = serde_json::from_str::<Frame>(text) {
        return Some(f);
    }
    serde_json::from_str::<MinimalFrame>(text)
        .ok()
        .map(|m| Frame {
            kind: m.kind,
            req_id: m.req_id,
            seq: m.seq,
            code: m.code,
            patch: None,
            objects: None,
        })
}

/// Id of the `i`-th load-generator object of a project.
pub(crate) fn object_id(i: u32) -> String {
    format!("lg-{i}")
}

/// Prefix of the reqIds used for `create` frames (updates use bare numbers).
pub(crate) const CREATE_REQ_PREFIX: char = 'c';

/// Appends a `create` frame for object `i`.
pub(crate) fn write_create(buf: &mut String, i: u32) {
    // Writing to a String cannot fail.
    let _ = write!(
        buf,
        r##"{{"type":"create","reqId":"{CREATE_REQ_PREFIX}{i}","object":{{"id":"lg-{i}","type":"rect","x":0,"y":0,"width":20,"height":20,"fill":"#888"}}}}"##
    );
}

/// Everything that varies in one `update` frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpdateFields<'a> {
    pub n: u64,
    pub object: u32,
    pub x: u32,
    pub y: u32,
    pub t_us: u64,
    /// `{run id}-{global client index}`; only `[0-9a-f-]`, so no escaping is needed.
    pub client_tag: &'a str,
}

/// Appends an `update` frame; its reqId is the edit number `n`.
pub(crate) fn write_update(buf: &mut String, u: &UpdateFields) {
    let _ = write!(
        buf,
        r#"{{"type":"update","reqId":"{n}","id":"lg-{o}","patch":{{"x":{x},"y":{y},"lg":{{"t":{t},"c":"{c}","n":{n}}}}}}}"#,
        n = u.n,
        o = u.object,
        x = u.x,
        y = u.y,
        t = u.t_us,
        c = u.client_tag,
    );
}

/// The tag a client writes into `lg.c`.
pub(crate) fn client_tag(run_id: &str, global: u64) -> String {
    format!("{run_id}-{global}")
}

/// Recovers the global client index from `lg.c`, if the tag belongs to this run.
pub(crate) fn parse_client_tag(tag: &str, run_id: &str) -> Option<u64> {
    let rest = tag.strip_prefix(run_id)?.strip_prefix('-')?;
    rest.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_frame_round_trips() {
        let mut s = String::new();
        write_update(
            &mut s,
            &UpdateFields {
                n: 42,
                object: 7,
                x: 1,
                y: 2,
                t_us: 1_700_000_000_000_000,
                client_tag: "abcd0123-9",
            },
        );
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(v["type"], "update");
        assert_eq!(v["reqId"], "42");
        assert_eq!(v["id"], "lg-7");
        assert_eq!(v["patch"]["lg"]["n"], 42);
        assert_eq!(v["patch"]["lg"]["c"], "abcd0123-9");

        // The broadcast a peer would receive carries the same patch.
        let bcast = format!(
            r#"{{"type":"updated","id":"lg-7","patch":{},"version":3,"seq":99,"by":"u"}}"#,
            v["patch"]
        );
        let f = parse(&bcast).expect("parses");
        assert_eq!(f.kind.as_str(), "updated");
        assert_eq!(f.seq, Some(99));
        let lg = f.patch.and_then(|p| p.lg).expect("stamp");
        assert_eq!((lg.t, lg.n), (1_700_000_000_000_000, 42));
        assert_eq!(parse_client_tag(lg.c.as_str(), "abcd0123"), Some(9));
        assert!(matches!(lg.c.0, Cow::Borrowed(_)));
    }

    #[test]
    fn create_frame_is_valid() {
        let mut s = String::new();
        write_create(&mut s, 3);
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(v["reqId"], "c3");
        assert_eq!(v["object"]["id"], object_id(3));
        assert_eq!(v["object"]["type"], "rect");
    }

    #[test]
    fn parses_server_frames() {
        let snap = parse(
            r#"{"type":"snapshot","projectId":"p","seq":42,"objects":[{"id":"lg-0","type":"rect","x":0,"version":3}]}"#,
        )
        .expect("snapshot");
        assert_eq!(snap.seq, Some(42));
        assert_eq!(snap.objects.map(|o| o.len()), Some(1));

        let ack =
            parse(r#"{"type":"ack","reqId":"17","id":"o1","version":1,"seq":43}"#).expect("ack");
        assert_eq!(ack.req_id.as_ref().map(Text::as_str), Some("17"));

        let err = parse(r#"{"type":"error","reqId":"2","code":"not_found","message":"x"}"#)
            .expect("error");
        assert_eq!(err.code.as_ref().map(Text::as_str), Some("not_found"));

        // Escaped strings still parse (owned).
        let esc = parse(r#"{"type":"err\u006fr","code":"a\"b"}"#).expect("escaped");
        assert_eq!(esc.kind.as_str(), "error");

        // A foreign patch with an odd `lg` keeps seq through the fallback.
        let odd = parse(r#"{"type":"updated","id":"o","patch":{"lg":5},"seq":7}"#).expect("odd");
        assert_eq!(odd.seq, Some(7));
        assert!(odd.patch.is_none());

        // A patch without a stamp.
        let plain = parse(r#"{"type":"updated","id":"o","patch":{"x":1},"seq":8}"#).expect("p");
        assert!(plain.patch.is_some_and(|p| p.lg.is_none()));

        for bad in ["", "[]", "42", r#"{"type":3}"#, r#"{"seq":1}"#, "{not json"] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn client_tags() {
        assert_eq!(client_tag("0a0b", 12), "0a0b-12");
        assert_eq!(parse_client_tag("0a0b-12", "0a0b"), Some(12));
        assert_eq!(parse_client_tag("ffff-12", "0a0b"), None);
        assert_eq!(parse_client_tag("0a0b12", "0a0b"), None);
        assert_eq!(parse_client_tag("0a0b-x", "0a0b"), None);
    }
}
