//! The WebSocket wire protocol: parsing client frames and encoding server frames.
//!
//! Parsing never panics and always says what was wrong; when a `reqId` could be read it is returned with the
//! error so the client can match it. Server frames that fan out to many sockets are encoded once, as text.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{ErrorCode, Rejection};
use crate::ids::ObjectId;
use crate::limits::Limits;
use crate::object::{parse_object_id, Edit, NewObject, Patch};

/// Longest `reqId` accepted.
pub const MAX_REQ_ID_LEN: usize = 64;
/// Longest presence display name accepted.
pub const MAX_PRESENCE_NAME_LEN: usize = 64;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Edit(Edit),
    Ping,
    /// A fresh state: the edits after `since` when the journal still holds them all, else a snapshot.
    Resync {
        since: Option<u64>,
    },
    /// Ephemeral cursor position; fanned out, never stored.
    Presence {
        x: f64,
        y: f64,
        name: Option<String>,
    },
}

/// A parsed client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    pub req_id: Option<String>,
    pub message: ClientMessage,
}

/// A frame that could not be accepted, with the `reqId` when one could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub req_id: Option<String>,
    pub rejection: Rejection,
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorCode::BadRequest, message)
}

/// Parses one text frame.
pub fn parse_client_frame(text: &str, limits: &Limits) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
        req_id: None,
        rejection: bad(format!("frame is not valid JSON: {e}")),
    })?;
    let Value::Object(mut map) = value else {
        return Err(FrameError {
            req_id: None,
            rejection: bad("frame must be a JSON object"),
        });
    };
    let req_id = match map.remove("reqId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= MAX_REQ_ID_LEN => Some(s),
        Some(Value::String(_)) => {
            return Err(FrameError {
                req_id: None,
                rejection: bad(format!(
                    "`reqId` is longer than {MAX_REQ_ID_LEN} characters"
                )),
            })
        }
        Some(_) => {
            return Err(FrameError {
                req_id: None,
                rejection: bad("`reqId` must be a string"),
            })
        }
    };
    match parse_message(map, limits) {
        Ok(message) => Ok(ClientFrame { req_id, message }),
        Err(rejection) => Err(FrameError { req_id, rejection }),
    }
}

fn parse_message(mut map: Map<String, Value>, limits: &Limits) -> Result<ClientMessage, Rejection> {
    let kind = match map.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(bad("`type` must be a string")),
        None => return Err(bad("`type` is missing")),
    };
    match kind {
        "create" => {
            let object = map.remove("object").ok_or_else(|| bad("`object` is missing"))?;
            Ok(ClientMessage::Edit(Edit::Create(NewObject::from_json(object, limits)?)))
        }
        "update" => {
            let id = parse_object_id(map.get("id"), "id")?;
            let patch = map.remove("patch").ok_or_else(|| bad("`patch` is missing"))?;
            let patch = Patch::from_json(&id, patch, limits)?;
            let if_version = parse_if_version(map.get("ifVersion"))?;
            Ok(ClientMessage::Edit(Edit::Update {
                id,
                patch,
                if_version,
            }))
        }
        "delete" => {
            let id = parse_object_id(map.get("id"), "id")?;
            let if_version = parse_if_version(map.get("ifVersion"))?;
            Ok(ClientMessage::Edit(Edit::Delete { id, if_version }))
        }
        "ping" => Ok(ClientMessage::Ping),
        "resync" => Ok(ClientMessage::Resync {
            since: parse_since(map.get("since"))?,
        }),
        "presence" => {
            let coord = |name: &str| match map.get(name).and_then(Value::as_f64) {
                Some(v) if v.is_finite() => Ok(v),
                _ => Err(bad(format!("`{name}` must be a finite number"))),
            };
            let (x, y) = (coord("x")?, coord("y")?);
            let name = match map.get("name") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.chars().count() <= MAX_PRESENCE_NAME_LEN => Some(s.clone()),
                Some(_) => {
                    return Err(bad(format!("`name` must be a string of at most {MAX_PRESENCE_NAME_LEN} characters")))
                }
            };
            Ok(ClientMessage::Presence { x, y, name })
        }
        other => Err(bad(format!(
            "unknown message type {other:?}; expected create, update, delete, ping, resync or presence"
        ))),
    }
}

/// Reads the optional `since` of a resync: the last `seq` the client has.
fn parse_since(value: Option<&Value>) -> Result<Option<u64>, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad("`since` must be a non-negative integer")),
    }
}

/// Reads the optional `ifVersion` of an update or delete.
fn parse_if_version(value: Option<&Value>) -> Result<Option<u64>, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad("`ifVersion` must be a non-negative integer")),
    }
}

/// Frames the server sends; encoded with [`ServerMessage::to_text`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Ack {
        #[serde(rename = "reqId", skip_serializing_if = "Option::is_none")]
        req_id: Option<&'a str>,
        id: &'a ObjectId,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
        seq: u64,
    },
    Pong {
        #[serde(rename = "reqId", skip_serializing_if = "Option::is_none")]
        req_id: Option<&'a str>,
    },
    Error {
        #[serde(rename = "reqId", skip_serializing_if = "Option::is_none")]
        req_id: Option<&'a str>,
        code: ErrorCode,
        message: &'a str,
        /// The object's current version, when a conditional edit did not match it.
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    Presence {
        #[serde(rename = "clientId")]
        client_id: &'a str,
        by: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        x: f64,
        y: f64,
    },
    PresenceLeft {
        #[serde(rename = "clientId")]
        client_id: &'a str,
    },
    /// Every edit of the project up to `seq` is in the durable store.
    Saved { seq: u64 },
    /// A resume sent every edit the client missed: it now holds the project as of `seq`.
    CaughtUp {
        #[serde(rename = "reqId", skip_serializing_if = "Option::is_none")]
        req_id: Option<&'a str>,
        seq: u64,
        #[serde(rename = "savedSeq")]
        saved_seq: u64,
        #[serde(rename = "clientId")]
        client_id: &'a str,
    },
    /// The edit was sent to the shared state but its reply never came: it may or may not be applied. A fresh
    /// snapshot follows, from which the client learns which.
    UnknownOutcome {
        #[serde(rename = "reqId", skip_serializing_if = "Option::is_none")]
        req_id: Option<&'a str>,
        message: &'a str,
    },
}

impl ServerMessage<'_> {
    pub fn to_text(&self) -> String {
        // Serializing these plain structs cannot fail; fall back to an internal error frame just in case.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"encoding failed"}"#.to_string()
        })
    }
}

/// What every other client of a project receives for an applied edit (`created`, `updated`, `deleted`), built
/// from JSON texts as they are stored, without re-parsing them. The Redis edit script writes these frames itself,
/// byte for byte the same (a conformance test holds it to this layout).
#[derive(Debug, Clone, Copy)]
pub enum Broadcast<'a> {
    /// `object`: the created object's JSON, with its `version`.
    Created {
        object: &'a str,
    },
    /// `patch`: the merge patch's JSON as the client's edit carried it.
    Updated {
        id: &'a ObjectId,
        patch: &'a str,
        version: u64,
    },
    Deleted {
        id: &'a ObjectId,
    },
}

impl Broadcast<'_> {
    /// The frame for the edit that got `seq`, made by user `by`.
    pub fn to_text(&self, seq: u64, by: &str) -> String {
        let head = match self {
            Broadcast::Created { object } => format!(r#"{{"type":"created","object":{object}"#),
            Broadcast::Updated { id, patch, version } => format!(
                r#"{{"type":"updated","id":{},"patch":{patch},"version":{version}"#,
                json_string(id.as_str())
            ),
            Broadcast::Deleted { id } => {
                format!(r#"{{"type":"deleted","id":{}"#, json_string(id.as_str()))
            }
        };
        format!(r#"{head},"seq":{seq},"by":{}}}"#, json_string(by))
    }
}

/// Encodes a `snapshot` frame from stored object JSON texts without re-parsing them.
pub fn snapshot_frame(
    project: &str,
    seq: u64,
    saved_seq: u64,
    client_id: Option<&str>,
    objects: &[String],
) -> String {
    project_state(
        Some("snapshot"),
        project,
        seq,
        saved_seq,
        client_id,
        objects,
    )
}

/// The body of `GET /api/projects/{id}/objects`: a snapshot without the frame's `type`.
pub fn objects_body(project: &str, seq: u64, saved_seq: u64, objects: &[String]) -> String {
    project_state(None, project, seq, saved_seq, None, objects)
}

/// A project's state in the one layout snapshots and the objects route share.
fn project_state(
    frame_type: Option<&str>,
    project: &str,
    seq: u64,
    saved_seq: u64,
    client_id: Option<&str>,
    objects: &[String],
) -> String {
    let mut out = String::with_capacity(80 + objects.iter().map(|o| o.len() + 1).sum::<usize>());
    out.push('{');
    if let Some(frame_type) = frame_type {
        out.push_str(r#""type":"#);
        out.push_str(&json_string(frame_type));
        out.push(',');
    }
    out.push_str(r#""projectId":"#);
    out.push_str(&json_string(project));
    out.push_str(r#","seq":"#);
    out.push_str(&seq.to_string());
    out.push_str(r#","savedSeq":"#);
    out.push_str(&saved_seq.to_string());
    if let Some(client_id) = client_id {
        out.push_str(r#","clientId":"#);
        out.push_str(&json_string(client_id));
    }
    out.push_str(r#","objects":["#);
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(object);
    }
    out.push_str("]}");
    out
}

/// A string as a JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        parse_client_frame(text, &Limits::default())
    }

    #[test]
    fn if_version_is_read_from_updates_and_deletes() {
        let f = parse(r#"{"type":"update","id":"o1","ifVersion":3,"patch":{"x":1}}"#).unwrap();
        assert!(matches!(f.message, ClientMessage::Edit(ref e) if e.if_version() == Some(3)));
        let f = parse(r#"{"type":"delete","id":"o1","ifVersion":7}"#).unwrap();
        assert!(matches!(f.message, ClientMessage::Edit(ref e) if e.if_version() == Some(7)));
        let f = parse(r#"{"type":"delete","id":"o1","ifVersion":null}"#).unwrap();
        assert!(matches!(f.message, ClientMessage::Edit(ref e) if e.if_version().is_none()));
        for bad in [r#""3""#, "-1", "1.5", "{}"] {
            let text = format!(
                r#"{{"type":"update","reqId":"r","id":"o1","ifVersion":{bad},"patch":{{}}}}"#
            );
            let e = parse(&text).unwrap_err();
            assert_eq!(e.rejection.code, ErrorCode::BadRequest, "{bad}");
            assert_eq!(e.req_id.as_deref(), Some("r"));
        }
    }

    #[test]
    fn parses_every_documented_client_message() {
        let f = parse(r#"{"type":"create","reqId":"1","object":{"id":"o1","type":"rect","x":10}}"#)
            .unwrap();
        assert_eq!(f.req_id.as_deref(), Some("1"));
        assert!(matches!(f.message, ClientMessage::Edit(Edit::Create(_))));
        assert!(matches!(
            parse(r#"{"type":"update","id":"o1","patch":{"x":15,"fill":null}}"#)
                .unwrap()
                .message,
            ClientMessage::Edit(Edit::Update { .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"delete","id":"o1"}"#).unwrap().message,
            ClientMessage::Edit(Edit::Delete { .. })
        ));
        assert_eq!(
            parse(r#"{"type":"ping","reqId":"4"}"#).unwrap().message,
            ClientMessage::Ping
        );
        assert_eq!(
            parse(r#"{"type":"resync"}"#).unwrap().message,
            ClientMessage::Resync { since: None }
        );
        assert_eq!(
            parse(r#"{"type":"resync","reqId":"6","since":42}"#)
                .unwrap()
                .message,
            ClientMessage::Resync { since: Some(42) }
        );
        for bad in [r#""42""#, "-1", "4.5", "[]"] {
            let text = format!(r#"{{"type":"resync","reqId":"r","since":{bad}}}"#);
            let e = parse(&text).unwrap_err();
            assert_eq!(e.rejection.code, ErrorCode::BadRequest, "{bad}");
            assert_eq!(e.req_id.as_deref(), Some("r"));
        }
    }

    #[test]
    fn malformed_frames_are_bad_requests_with_req_id_when_readable() {
        for text in [
            "",
            "nope",
            "[1]",
            "3",
            r#"{"reqId":5,"type":"ping"}"#,
            r#"{"type":"fly"}"#,
            r#"{"type":7}"#,
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.rejection.code, ErrorCode::BadRequest, "{text}");
        }
        let err = parse(r#"{"type":"update","reqId":"r9","id":"o1","patch":[1]}"#).unwrap_err();
        assert_eq!(err.req_id.as_deref(), Some("r9"));
        let long = format!(r#"{{"type":"ping","reqId":"{}"}}"#, "x".repeat(65));
        assert_eq!(
            parse(&long).unwrap_err().rejection.code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn server_frames_have_the_documented_shape() {
        let id = ObjectId::parse("o1").unwrap();
        let ack: Value = serde_json::from_str(
            &ServerMessage::Ack {
                req_id: Some("1"),
                id: &id,
                version: Some(1),
                seq: 43,
            }
            .to_text(),
        )
        .unwrap();
        assert_eq!(
            ack,
            json!({"type":"ack","reqId":"1","id":"o1","version":1,"seq":43})
        );
        let del: Value = serde_json::from_str(
            &ServerMessage::Ack {
                req_id: None,
                id: &id,
                version: None,
                seq: 2,
            }
            .to_text(),
        )
        .unwrap();
        assert_eq!(del, json!({"type":"ack","id":"o1","seq":2}));
        let snap: Value = serde_json::from_str(&snapshot_frame(
            "p1",
            42,
            40,
            None,
            &[r#"{"id":"o1"}"#.into()],
        ))
        .unwrap();
        assert_eq!(
            snap,
            json!({"type":"snapshot","projectId":"p1","seq":42,"savedSeq":40,"objects":[{"id":"o1"}]})
        );
        let left: Value =
            serde_json::from_str(&ServerMessage::PresenceLeft { client_id: "c1" }.to_text())
                .unwrap();
        assert_eq!(left, json!({"type":"presence_left","clientId":"c1"}));
        let caught_up: Value = serde_json::from_str(
            &ServerMessage::CaughtUp {
                req_id: Some("6"),
                seq: 45,
                saved_seq: 40,
                client_id: "c1",
            }
            .to_text(),
        )
        .unwrap();
        assert_eq!(
            caught_up,
            json!({"type":"caught_up","reqId":"6","seq":45,"savedSeq":40,"clientId":"c1"})
        );
    }
}
