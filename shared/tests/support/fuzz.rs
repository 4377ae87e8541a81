//! Generators of client-like input for the property tests (`fuzz_input.rs`, `lua_merge.rs`).

use canvas_shared::object::{RESERVED_FIELDS, VERSION_FIELD};
use canvas_shared::protocol::MAX_REQ_ID_LEN;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

// proptest drives every case (its runner, seeds, case counts and failure reports), but the JSON itself comes from
// the small hand-written generator below, seeded by proptest: proptest's structural strategies cost milliseconds
// per nested value in a debug build, which would make 100,000 cases take minutes. The price is that a failing
// input is reported as generated, not shrunk.

/// A deterministic generator of client-like input (splitmix64).
pub struct Fuzz(pub u64);

impl Fuzz {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True `percent` % of the time.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    pub fn char(&mut self) -> char {
        match self.below(8) {
            0..=5 => self.pick(&['a', 'b', 'c', 'd', 'e']),
            6 => self.pick(&[
                '"', '\\', '/', '{', '}', '[', ']', ',', ':', '\u{0}', '\n', '\t', '\u{1f}',
                '\u{7f}', 'é', '😀', '\u{2028}', '\u{fffd}',
            ]),
            _ => loop {
                if let Some(c) = char::from_u32((self.next() % 0x11_0000) as u32) {
                    break c;
                }
            },
        }
    }

    /// Text with what JSON encoders must escape and non-ASCII.
    pub fn text(&mut self, max: usize) -> String {
        let len = self.below(max + 1);
        (0..len).map(|_| self.char()).collect()
    }

    pub fn text_of(&mut self, charset: &str, min: usize, max: usize) -> String {
        let chars: Vec<char> = charset.chars().collect();
        let len = min + self.below(max - min + 1);
        (0..len).map(|_| self.pick(&chars)).collect()
    }

    /// Object keys: a few colliding short names, names the protocol treats specially, and arbitrary text.
    pub fn key(&mut self) -> String {
        match self.below(6) {
            0..=3 => self
                .pick(&["a", "b", "c", "d", "aa", "x", "fill"])
                .to_string(),
            4 => self
                .pick(&[
                    "id",
                    "type",
                    "version",
                    "projectId",
                    "objectId",
                    "updatedAt",
                    "",
                    "\"",
                    "\\",
                    "}",
                    ",",
                    ":",
                    "{\"a\":1}",
                    "é",
                    "😀",
                ])
                .to_string(),
            _ => self.text(8),
        }
    }

    pub fn number(&mut self) -> Value {
        match self.below(5) {
            0 => Value::from(self.next() as i64),
            1 => Value::from(self.next()),
            2 => {
                Number::from_f64(f64::from_bits(self.next())).map_or(Value::from(0), Value::Number)
            }
            3 => Value::from((self.below(2000) as f64 - 1000.0) / 10f64.powi(self.below(4) as i32)),
            _ => Value::from(self.below(10)),
        }
    }

    pub fn leaf(&mut self) -> Value {
        match self.below(6) {
            0 => Value::Null,
            1 => Value::Bool(self.chance(50)),
            2 | 3 => self.number(),
            _ => Value::String(self.text(12)),
        }
    }

    pub fn json(&mut self, depth: usize) -> Value {
        if depth == 0 {
            return self.leaf();
        }
        match self.below(4) {
            0 | 1 => self.leaf(),
            2 => Value::Array((0..self.below(4)).map(|_| self.json(depth - 1)).collect()),
            _ => Value::Object(self.map(depth - 1)),
        }
    }

    pub fn map(&mut self, depth: usize) -> Map<String, Value> {
        (0..self.below(5))
            .map(|_| (self.key(), self.json(depth)))
            .collect()
    }

    /// A value for an `id` field: mostly valid ids, sometimes not.
    pub fn id_value(&mut self) -> Value {
        match self.below(9) {
            0..=5 => Value::String(self.text_of(ID_CHARS, 1, 12)),
            6 => Value::String(self.text_of(" !#$%&/;<=>?@[]^`{|}~az09", 0, 12)),
            7 => Value::String("x".repeat(128 + self.below(2))),
            _ => self.leaf(),
        }
    }

    pub fn type_value(&mut self) -> Value {
        match self.below(8) {
            0..=5 => Value::String(self.text_of("abcdefgh", 1, 8)),
            6 => Value::String(String::new()),
            _ => self.leaf(),
        }
    }

    /// A chain of nested arrays and objects around the validation limit (32 levels).
    pub fn deep(&mut self) -> Value {
        let levels = 28 + self.below(8);
        (0..levels).fold(self.leaf(), |inner, _| {
            if self.chance(50) {
                Value::Array(vec![inner])
            } else {
                Value::Object(Map::from_iter([(self.key(), inner)]))
            }
        })
    }

    /// Something shaped like a `create` object: usually with `id` and `type`, sometimes `version`, reserved names
    /// or too much data.
    pub fn new_object(&mut self) -> Value {
        let mut body = self.map(2);
        if self.chance(90) {
            body.insert("id".into(), self.id_value());
        }
        if self.chance(90) {
            body.insert("type".into(), self.type_value());
        }
        if self.chance(30) {
            body.insert(VERSION_FIELD.into(), self.json(1));
        }
        if self.chance(5) {
            body.insert(self.pick(&RESERVED_FIELDS).into(), Value::from(1));
        }
        if self.chance(10) {
            body.insert(
                "pad".into(),
                Value::String("p".repeat(400 + self.below(400))),
            );
        }
        if self.chance(4) {
            body.insert("deep".into(), self.deep());
        }
        Value::Object(body)
    }

    /// Something shaped like a `patch` of object `id`.
    pub fn patch(&mut self, id: &str) -> Value {
        let mut patch = self.map(2);
        if self.chance(5) {
            return Value::Array(vec![Value::Object(patch)]);
        }
        if self.chance(15) {
            let id = if self.chance(50) {
                Value::String(id.into())
            } else {
                self.id_value()
            };
            patch.insert("id".into(), id);
        }
        if self.chance(15) {
            let kind = if self.chance(30) {
                Value::Null
            } else {
                self.type_value()
            };
            patch.insert("type".into(), kind);
        }
        if self.chance(20) {
            patch.insert(VERSION_FIELD.into(), self.json(1));
        }
        if self.chance(4) {
            patch.insert("deep".into(), self.deep());
        }
        Value::Object(patch)
    }

    /// A JSON value shaped like a client frame, with every field sometimes missing or of the wrong kind.
    pub fn frame(&mut self) -> Value {
        let mut frame = if self.chance(20) {
            self.map(1)
        } else {
            Map::new()
        };
        if self.chance(95) {
            let kind = match self.below(10) {
                0..=7 => Value::String(
                    self.pick(&["create", "update", "delete", "ping", "resync", "presence"])
                        .into(),
                ),
                8 => Value::String(self.text_of("abcdefghpingsync", 0, 8)),
                _ => self.leaf(),
            };
            frame.insert("type".into(), kind);
        }
        if self.chance(70) {
            let req_id = match self.below(7) {
                0..=3 => Value::String(self.text_of("abc0123-", 0, 10)),
                4 => Value::String("r".repeat(MAX_REQ_ID_LEN)),
                5 => Value::String("r".repeat(MAX_REQ_ID_LEN + 1)),
                _ => self.leaf(),
            };
            frame.insert("reqId".into(), req_id);
        }
        if self.chance(50) {
            frame.insert("object".into(), self.new_object());
        }
        if self.chance(60) {
            frame.insert("id".into(), self.id_value());
        }
        if self.chance(50) {
            let id = frame
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("o1")
                .to_string();
            frame.insert("patch".into(), self.patch(&id));
        }
        for coord in ["x", "y"] {
            if self.chance(50) {
                let v = if self.chance(70) {
                    self.number()
                } else {
                    self.leaf()
                };
                frame.insert(coord.into(), v);
            }
        }
        if self.chance(30) {
            let name = if self.chance(80) {
                Value::String(self.text(70))
            } else {
                self.leaf()
            };
            frame.insert("name".into(), name);
        }
        Value::Object(frame)
    }

    /// Arbitrary text a socket might carry: random characters, JSON-ish soup, or a cut-off frame.
    pub fn frame_text(&mut self) -> String {
        match self.below(3) {
            0 => self.text(40),
            1 => self.text_of("[]{}\",:0123456789abcdefnulrsty ", 0, 40),
            _ => {
                let s = self.frame().to_string();
                let cut = self.below(s.len() + 1);
                let cut = (0..=cut)
                    .rev()
                    .find(|i| s.is_char_boundary(*i))
                    .unwrap_or(0);
                s[..cut].to_string()
            }
        }
    }
}

pub const ID_CHARS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-";

/// A proptest strategy producing `make`'s output from a proptest-chosen seed.
pub fn generated<T: std::fmt::Debug + Clone>(make: fn(&mut Fuzz) -> T) -> impl Strategy<Value = T> {
    any::<u64>()
        .no_shrink()
        .prop_map(move |seed| make(&mut Fuzz(seed)))
}
