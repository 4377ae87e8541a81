//! Storm: 10,000 random and malformed frames over one socket (garbage text, binary frames, invalid and valid
//! edits, huge frames under the frame limit), pipelined as fast as the socket takes them. Every frame's reply is
//! predicted by a model that applies the valid edits with `merge_patch` in order; afterwards the project's state in
//! Redis (read through the objects API) must be exactly the model, an observer that only saw broadcasts must hold
//! the same state, and other clients must have been served throughout.
//!
//! The seed is printed; rerun one with `STORM_SEED=<n> cargo test -p canvas-gateway --test storm`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use canvas_gateway::config::{AbuseArgs, TuningArgs};
use canvas_shared::object::merge_patch;
use canvas_testkit::{http_get, RedisServer, WsClient};
use common::{project, spawn_gateway_with, Options};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

const FRAMES: usize = 10_000;
const OBJECT_LIMIT: usize = 64 * 1024;

/// What the server must answer to one frame.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Ack { id: String, version: Option<u64> },
    Error(&'static str),
    Pong,
    Snapshot,
}

/// One frame of the storm and what it must get back.
struct Shot {
    message: Message,
    req_id: Option<String>,
    /// None: no reply at all (presence).
    expect: Option<Reply>,
}

/// The project as the valid edits leave it.
#[derive(Default)]
struct Model {
    objects: BTreeMap<String, Value>,
}

impl Model {
    fn size_with(&self, object: &Value) -> usize {
        object.to_string().len()
    }
}

struct Gen {
    rng: StdRng,
    model: Model,
    next_req: usize,
    ids: Vec<String>,
}

impl Gen {
    fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            model: Model::default(),
            next_req: 0,
            ids: (0..40).map(|i| format!("o{i}")).collect(),
        }
    }

    fn req_id(&mut self) -> String {
        self.next_req += 1;
        format!("s{}", self.next_req)
    }

    fn id(&mut self) -> String {
        let i = self.rng.random_range(0..self.ids.len());
        self.ids[i].clone()
    }

    fn text(&mut self, max: usize) -> String {
        let len = self.rng.random_range(0..=max);
        (0..len)
            .map(|_| match self.rng.random_range(0..10) {
                0..=5 => char::from(self.rng.random_range(b'a'..=b'z')),
                6 => ['"', '\\', '{', '}', '[', ']', ',', ':', '\n', '\u{0}']
                    [self.rng.random_range(0..10)],
                7 => ['é', '😀', '\u{2028}', '中'][self.rng.random_range(0..4)],
                _ => char::from_u32(self.rng.random_range(0x20..0x2_0000)).unwrap_or('?'),
            })
            .collect()
    }

    /// A JSON value DynamoDB can store (numbers in range, shallow).
    fn value(&mut self, depth: usize) -> Value {
        match self.rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(self.rng.random()),
            2 => json!(self.rng.random_range(-1_000_000i64..1_000_000)),
            3 => json!(f64::from(self.rng.random_range(-100_000i32..100_000)) / 100.0),
            4 => Value::String(self.text(12)),
            5 => Value::Array(
                (0..self.rng.random_range(0..4))
                    .map(|_| self.value(depth - 1))
                    .collect(),
            ),
            _ => Value::Object(self.props(depth - 1, 4)),
        }
    }

    fn key(&mut self) -> String {
        match self.rng.random_range(0..8) {
            0..=5 => ["x", "y", "w", "h", "fill", "label", "style", "points"]
                [self.rng.random_range(0..8)]
            .into(),
            // Never empty: DynamoDB cannot store an empty name, so the door refuses one.
            6 => format!("k{}", self.text(5)),
            _ => " ".into(),
        }
    }

    fn props(&mut self, depth: usize, max: usize) -> Map<String, Value> {
        (0..self.rng.random_range(0..=max))
            .map(|_| (self.key(), self.value(depth)))
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "id" | "type" | "version" | "projectId" | "objectId" | "updatedAt"
                )
            })
            .collect()
    }

    fn shot(&mut self, message: Message, req_id: Option<String>, expect: Option<Reply>) -> Shot {
        Shot {
            message,
            req_id,
            expect,
        }
    }

    fn text_shot(&mut self, frame: Value, expect: Reply) -> Shot {
        let req_id = frame["reqId"].as_str().map(str::to_string);
        self.shot(
            Message::Text(frame.to_string().into()),
            req_id,
            Some(expect),
        )
    }

    fn create(&mut self, id: String, mut body: Map<String, Value>) -> Shot {
        let req_id = self.req_id();
        let kind = ["rect", "ellipse", "text"][self.rng.random_range(0..3)];
        body.insert("id".into(), json!(id));
        body.insert("type".into(), json!(kind));
        if self.rng.random_range(0..10) == 0 {
            body.insert("version".into(), json!(99)); // ignored
        }
        let frame = json!({"type":"create","reqId":req_id,"object":body});
        body.remove("version");
        // Validation measures the object as sent (without `version`); the edit script measures it as stored.
        let sent_size = Value::Object(body.clone()).to_string().len();
        let mut stored = Value::Object(body);
        stored["version"] = json!(1);
        let expect = if sent_size > OBJECT_LIMIT {
            Reply::Error("too_large")
        } else if self.model.objects.contains_key(&id) {
            Reply::Error("conflict")
        } else if self.model.size_with(&stored) > OBJECT_LIMIT {
            Reply::Error("too_large")
        } else {
            self.model.objects.insert(id.clone(), stored);
            Reply::Ack {
                id,
                version: Some(1),
            }
        };
        self.text_shot(frame, expect)
    }

    fn update(&mut self, id: String, patch: Map<String, Value>) -> Shot {
        let req_id = self.req_id();
        let frame = json!({"type":"update","reqId":req_id,"id":id,"patch":patch});
        let expect = if Value::Object(patch.clone()).to_string().len() > OBJECT_LIMIT {
            Reply::Error("too_large")
        } else {
            match self.model.objects.get(&id) {
                None => Reply::Error("not_found"),
                Some(current) => {
                    if patch.get("type").is_some_and(|t| *t != current["type"]) {
                        Reply::Error("bad_request")
                    } else {
                        let mut next = current.clone();
                        merge_patch(&mut next, &Value::Object(patch));
                        let version = current["version"].as_u64().unwrap_or(0) + 1;
                        next["version"] = json!(version);
                        if self.model.size_with(&next) > OBJECT_LIMIT {
                            Reply::Error("too_large")
                        } else {
                            self.model.objects.insert(id.clone(), next);
                            Reply::Ack {
                                id,
                                version: Some(version),
                            }
                        }
                    }
                }
            }
        };
        self.text_shot(frame, expect)
    }

    fn delete(&mut self, id: String) -> Shot {
        let req_id = self.req_id();
        let expect = if self.model.objects.remove(&id).is_some() {
            Reply::Ack {
                id: id.clone(),
                version: None,
            }
        } else {
            Reply::Error("not_found")
        };
        self.text_shot(json!({"type":"delete","reqId":req_id,"id":id}), expect)
    }

    /// Text that is not a usable frame and carries no readable reqId.
    fn garbage(&mut self) -> Shot {
        let text = match self.rng.random_range(0..7) {
            0 => self.text(60),
            1 => {
                let full = json!({"type":"create","reqId":"cut","object":{"id":"o1","type":"r","x":[1,2,3]}}).to_string();
                let cut = self.rng.random_range(0..full.len());
                full[..cut].to_string()
            }
            2 => ["[1,2,3]", "42", "\"str\"", "null", "true", "[]", "{}"]
                [self.rng.random_range(0..7)]
            .into(),
            3 => format!("{{\"type\":\"ping\",\"reqId\":\"{}\"}}", "r".repeat(65)),
            4 => format!(
                "{{\"type\":\"update\",\"reqId\":{},\"id\":\"o1\",\"patch\":{{}}}}",
                self.rng.random_range(0..100)
            ),
            5 => "{\"type\":\"ping\"".into(),
            _ => "\u{feff}{}".into(),
        };
        // A bare `{}` or a ping without reqId... are still errors: `{}` has no type.
        self.shot(
            Message::Text(text.into()),
            None,
            Some(Reply::Error("bad_request")),
        )
    }

    /// Well-formed JSON objects with a reqId that are refused by validation.
    fn invalid(&mut self) -> Shot {
        let req_id = self.req_id();
        let id = self.id();
        let exists = self.model.objects.contains_key(&id);
        let deep = (0..40).fold(json!(1), |inner, _| json!({"d": inner}));
        let (frame, expect) = match self.rng.random_range(0..14) {
            0 => (json!({"type":"explode","reqId":req_id}), "bad_request"),
            1 => (json!({"type":7,"reqId":req_id}), "bad_request"),
            2 => (json!({"reqId":req_id}), "bad_request"),
            3 => (json!({"type":"create","reqId":req_id}), "bad_request"),
            4 => (
                json!({"type":"create","reqId":req_id,"object":{"type":"r"}}),
                "bad_request",
            ),
            5 => (
                json!({"type":"create","reqId":req_id,"object":{"id":"bad id!","type":"r"}}),
                "bad_request",
            ),
            6 => (
                json!({"type":"create","reqId":req_id,"object":{"id":id,"type":""}}),
                "bad_request",
            ),
            7 => (
                json!({"type":"create","reqId":req_id,"object":{"id":id,"type":"r","updatedAt":1}}),
                "bad_request",
            ),
            8 => (
                json!({"type":"create","reqId":req_id,"object":{"id":id,"type":"r","n":1e300}}),
                "bad_request",
            ),
            9 => (
                json!({"type":"create","reqId":req_id,"object":{"id":id,"type":"r","deep":deep}}),
                "bad_request",
            ),
            10 => (
                json!({"type":"update","reqId":req_id,"id":id,"patch":{"id":"other"}}),
                "bad_request",
            ),
            11 => (
                json!({"type":"update","reqId":req_id,"id":id,"patch":{"type":null}}),
                "bad_request",
            ),
            12 => (
                json!({"type":"update","reqId":req_id,"id":id,"patch":[1,2]}),
                "bad_request",
            ),
            // A type change passes validation; the edit script refuses it, after checking the object exists.
            _ => (
                json!({"type":"update","reqId":req_id,"id":id,"patch":{"type":"changed"}}),
                if exists { "bad_request" } else { "not_found" },
            ),
        };
        self.text_shot(frame, Reply::Error(expect))
    }

    fn next(&mut self) -> Shot {
        let roll = self.rng.random_range(0..1000);
        match roll {
            0..=149 => self.garbage(),
            150..=179 => {
                let len = self.rng.random_range(0..64);
                let bytes: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                self.shot(
                    Message::Binary(bytes.into()),
                    None,
                    Some(Reply::Error("bad_request")),
                )
            }
            180..=249 => self.invalid(),
            250..=399 => {
                let id = self.id();
                let body = self.props(2, 6);
                self.create(id, body)
            }
            400..=649 => {
                let id = self.id();
                let mut patch = self.props(2, 4);
                if self.rng.random_range(0..8) == 0 {
                    if let Some(t) = self.model.objects.get(&id).map(|o| o["type"].clone()) {
                        patch.insert("type".into(), t); // same type: allowed
                    }
                }
                if self.rng.random_range(0..8) == 0 {
                    patch.insert("id".into(), json!(id)); // same id: allowed
                }
                self.update(id, patch)
            }
            650..=729 => {
                let id = self.id();
                self.delete(id)
            }
            // Big objects under the object limit, then patches that push them over it.
            730..=749 => {
                let id = self.id();
                let mut body = self.props(1, 3);
                body.insert(
                    "blob".into(),
                    json!("b".repeat(self.rng.random_range(30_000..40_000))),
                );
                self.create(id, body)
            }
            750..=764 => {
                let id = self.id();
                let mut patch = Map::new();
                let key = ["blob", "blob2", "blob3"][self.rng.random_range(0..3)];
                patch.insert(
                    key.into(),
                    json!("p".repeat(self.rng.random_range(30_000..40_000))),
                );
                self.update(id, patch)
            }
            // Frames far over the object limit but under the 256 KiB frame limit.
            765..=774 => {
                let id = self.id();
                let mut body = Map::new();
                body.insert(
                    "blob".into(),
                    json!("h".repeat(self.rng.random_range(100_000..200_000))),
                );
                self.create(id, body)
            }
            775..=784 => {
                let req_id = self.req_id();
                let pad = "z".repeat(self.rng.random_range(100_000..250_000));
                self.text_shot(json!({"type":"ping","reqId":req_id,"pad":pad}), Reply::Pong)
            }
            785..=869 => {
                let req_id = self.req_id();
                self.text_shot(json!({"type":"ping","reqId":req_id}), Reply::Pong)
            }
            870..=874 => {
                let req_id = self.req_id();
                self.text_shot(json!({"type":"resync","reqId":req_id}), Reply::Snapshot)
            }
            875..=924 => {
                let frame = json!({"type":"presence","x":self.rng.random_range(0..1000),"y":3,"name":"storm"});
                self.shot(Message::Text(frame.to_string().into()), None, None)
            }
            _ => {
                let id = self.id();
                let patch = self.props(3, 3);
                self.update(id, patch)
            }
        }
    }
}

fn seed() -> u64 {
    std::env::var("STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random())
}

/// Applies a broadcast to an observer's copy of the project.
fn observe(objects: &mut BTreeMap<String, Value>, frame: &Value) {
    match frame["type"].as_str() {
        Some("created") => {
            let o = frame["object"].clone();
            objects.insert(o["id"].as_str().unwrap_or_default().to_string(), o);
        }
        Some("updated") => {
            let id = frame["id"].as_str().unwrap_or_default().to_string();
            let o = objects.entry(id).or_insert(Value::Null);
            merge_patch(o, &frame["patch"]);
            o["version"] = frame["version"].clone();
        }
        Some("deleted") => {
            objects.remove(frame["id"].as_str().unwrap_or_default());
        }
        _ => {}
    }
}

fn by_id(objects: &[Value]) -> BTreeMap<String, Value> {
    canvas_testkit::edits::by_id(objects.iter().cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_frames_leave_exactly_the_valid_edits() {
    let seed = seed();
    println!("STORM_SEED={seed}");
    let redis = RedisServer::start();
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            tuning: TuningArgs {
                // The storm client reads as fast as it can, but a loaded CI machine should not turn this test into
                // the slow-client test (resilience.rs has that one).
                outgoing_queue: 16_384,
                abuse: AbuseArgs {
                    edits_per_second: 0.0, // unlimited: abuse.rs tests the rate limit
                    ..AbuseArgs::default()
                },
                ..TuningArgs::default()
            },
            ..Options::default()
        },
    )
    .await;
    let p = project("storm");
    let elsewhere = project("bystander");

    let mut generator = Gen::new(seed);
    let shots: Vec<Shot> = (0..FRAMES).map(|_| generator.next()).collect();
    let model = generator.model.objects;
    let expected: HashMap<String, Reply> = shots
        .iter()
        .filter_map(|s| Some((s.req_id.clone()?, s.expect.clone()?)))
        .collect();
    let anonymous_errors = shots
        .iter()
        .filter(|s| s.req_id.is_none() && s.expect.is_some())
        .count();
    let acks = expected
        .values()
        .filter(|r| matches!(r, Reply::Ack { .. }))
        .count();
    println!(
        "{FRAMES} frames: {} with a reqId, {anonymous_errors} errors without one, {acks} valid edits, {} objects at the end",
        expected.len(),
        model.len()
    );

    // An observer of the same project, folding broadcasts into its own copy.
    let (mut observer, snapshot) = WsClient::join(&g.ws(&p)).await.unwrap();
    let start_seq = snapshot["seq"].as_u64().unwrap();
    let final_seq = start_seq + acks as u64;
    let observer_task = tokio::spawn(async move {
        let mut objects = BTreeMap::new();
        let mut last = start_seq;
        while last < final_seq {
            let frame = observer.recv().await.expect("observer served");
            if let Some(seq) = frame["seq"].as_u64() {
                assert_eq!(seq, last + 1, "observer saw a gap: {frame}");
                last = seq;
            }
            observe(&mut objects, &frame);
        }
        (observer, objects)
    });

    // A bystander in another project pings throughout.
    let (mut bystander, _) = WsClient::join(&g.ws(&elsewhere)).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stop_bystander = stop.clone();
    let bystander_task = tokio::spawn(async move {
        let mut worst = Duration::ZERO;
        let mut pings = 0;
        while !stop_bystander.is_cancelled() {
            let t = Instant::now();
            let pong = bystander
                .request(json!({"type":"ping"}))
                .await
                .expect("bystander served");
            assert_eq!(pong["type"], "pong");
            worst = worst.max(t.elapsed());
            pings += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (bystander, pings, worst)
    });

    // The storm: one socket, written and read at once.
    let (socket, _) = tokio_tungstenite::connect_async(g.ws(&p)).await.unwrap();
    let (mut sink, mut stream) = socket.split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for shot in shots {
            sink.send(shot.message).await.expect("storm socket open");
        }
        sink.send(Message::Text(
            json!({"type":"ping","reqId":"end"}).to_string().into(),
        ))
        .await
        .unwrap();
        sink
    });
    let mut replies: HashMap<String, Value> = HashMap::new();
    let mut anonymous = Vec::new();
    let mut ack_seqs = Vec::new();
    let mut ended = false;
    while !(ended && replies.len() == expected.len() && anonymous.len() == anonymous_errors) {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("storm replies keep coming")
            .expect("storm socket open")
            .expect("storm socket healthy");
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        match (v["type"].as_str(), v["reqId"].as_str()) {
            (Some("snapshot"), None) | (Some("presence"), _) => {} // the initial snapshot
            (_, Some("end")) => ended = true,
            (Some("error"), None) => anonymous.push(v),
            (_, Some(req_id)) => {
                if v["type"] == "ack" {
                    ack_seqs.push((
                        req_id.trim_start_matches('s').parse::<usize>().unwrap(),
                        v["seq"].as_u64().unwrap(),
                    ));
                }
                assert!(
                    replies.insert(req_id.to_string(), v.clone()).is_none(),
                    "two replies to {req_id}"
                );
            }
            _ => panic!("unexpected frame on the storm socket: {v}"),
        }
    }
    let storm_time = started.elapsed();
    let sink = writer.await.unwrap();

    // Every frame got exactly the predicted answer.
    for (req_id, expect) in &expected {
        let got = &replies[req_id];
        let ok = match expect {
            Reply::Ack { id, version } => {
                got["type"] == "ack"
                    && got["id"] == id.as_str()
                    && got["version"].as_u64() == *version
            }
            Reply::Error(code) => got["type"] == "error" && got["code"] == *code,
            Reply::Pong => got["type"] == "pong",
            Reply::Snapshot => got["type"] == "snapshot",
        };
        assert!(ok, "seed {seed}: {req_id} expected {expect:?}, got {got}");
    }
    assert!(anonymous.iter().all(|e| e["code"] == "bad_request"));
    // Acks in the order the edits were sent carry consecutive seqs.
    ack_seqs.sort();
    let seqs: Vec<u64> = ack_seqs.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        seqs,
        (start_seq + 1..=final_seq).collect::<Vec<_>>(),
        "seed {seed}"
    );

    // The state in Redis is exactly what the valid edits made.
    let (status, body) = http_get(&g.http(&format!("/api/projects/{p}/objects")), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["seq"].as_u64(), Some(final_seq));
    let stored = by_id(body["objects"].as_array().unwrap());
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        model.keys().collect::<Vec<_>>(),
        "seed {seed}"
    );
    for (id, object) in &model {
        assert_eq!(&stored[id], object, "seed {seed}: object {id}");
    }

    // The observer, from broadcasts alone, holds the same state.
    let (mut observer, seen) = tokio::time::timeout(Duration::from_secs(30), observer_task)
        .await
        .expect("observer caught up")
        .unwrap();
    assert_eq!(seen, model, "seed {seed}: observer's copy");

    // Others were served throughout, and still are; so is the storm socket.
    stop.cancel();
    let (mut bystander, pings, worst) = bystander_task.await.unwrap();
    println!("storm took {storm_time:?}; bystander answered {pings} pings, slowest {worst:?}");
    assert!(pings >= 3, "bystander served during the storm");
    assert!(worst < Duration::from_secs(5), "bystander waited {worst:?}");
    assert_eq!(
        bystander.request(json!({"type":"ping"})).await.unwrap()["type"],
        "pong"
    );
    let (mut late, snapshot) = WsClient::join(&g.ws(&p)).await.unwrap();
    assert_eq!(by_id(snapshot["objects"].as_array().unwrap()), model);
    let ack = late
        .request(json!({"type":"create","object":{"id":"after-storm","type":"rect"}}))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack");
    assert_eq!(
        observer.recv_type("created").await.unwrap()["object"]["id"],
        "after-storm"
    );
    let mut storm = sink.reunite(stream).unwrap();
    storm
        .send(Message::Text(
            json!({"type":"ping","reqId":"still"}).to_string().into(),
        ))
        .await
        .unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), storm.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            if serde_json::from_str::<Value>(&t).unwrap()["reqId"] == "still" {
                break;
            }
        }
    }
}
