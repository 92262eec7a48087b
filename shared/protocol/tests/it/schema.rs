//! The JSON Schemas in `shared/protocol/schema/` against the Rust types.
//!
//! - Each committed schema file equals what schemars generates from the types
//!   now, byte for byte, so the files cannot drift from the code. After
//!   changing a message type, regenerate them and commit the diff:
//!
//!   ```text
//!   UPDATE_SCHEMAS=1 cargo test -p protocol --test it schema
//!   ```
//!
//!   With `UPDATE_SCHEMAS=1` the test rewrites the files (and deletes stale
//!   ones) instead of comparing.
//! - A real, signed sample of every message variant validates against its
//!   own schema and its direction's union schema, and survives a JSON round
//!   trip with its signatures and token still verifying.
//! - Invalid documents fail the schema AND serde decoding (with the error
//!   code the hub would send), and documents the types accept by design
//!   (unknown fields from a newer hub) pass both: schema and types agree.
//! - The JSON examples and the error-code table in docs/protocol.md are
//!   checked against the same types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use jsonschema::Validator;
use schemars::{schema_for, Schema};
use serde_json::{json, Value};
use uuid::Uuid;

use protocol::crypto::{sign_hello, sign_result, verify_hello, verify_result};
use protocol::limits;
use protocol::{
    keypair, AckOutcome, Challenge, CheckResult, CheckSpec, CheckStatus, ErrorCode, Heartbeat,
    HeartbeatAck, Hello, HubMessage, Keyring, Limits, Nonce, PublicKey, Reconnect, ResultAck,
    Signature, StatusRange, Task, TokenFields, ValidatorMessage, Welcome, SUPPORTED_VERSIONS,
};

const COMMENT: &str = "Generated from the Rust types in shared/protocol by \
    shared/protocol/tests/it/schema.rs; do not edit. Regenerate with \
    `UPDATE_SCHEMAS=1 cargo test -p protocol --test it schema`.";

/// Every message: its `type` on the wire (also its file name) and the Rust
/// type that carries it. A variant missing here fails `every_variant_has_a_file`.
const HUB_TYPES: &[(&str, &str)] = &[
    ("challenge", "Challenge"),
    ("welcome", "Welcome"),
    ("heartbeat_ack", "HeartbeatAck"),
    ("task", "Task"),
    ("result_ack", "ResultAck"),
    ("error", "ErrorFrame"),
    ("reconnect", "Reconnect"),
];
const VALIDATOR_TYPES: &[(&str, &str)] = &[
    ("hello", "Hello"),
    ("heartbeat", "Heartbeat"),
    ("result", "CheckResult"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// Hub -> validator.
    Hub,
    /// Validator -> hub.
    Validator,
}

impl Dir {
    fn of_type(ty: &str) -> Option<Self> {
        if HubMessage::TYPES.contains(&ty) {
            Some(Self::Hub)
        } else if ValidatorMessage::TYPES.contains(&ty) {
            Some(Self::Validator)
        } else {
            None
        }
    }

    fn union_file(self) -> &'static str {
        match self {
            Self::Hub => "hub_message.json",
            Self::Validator => "validator_message.json",
        }
    }

    fn arrow(self) -> &'static str {
        match self {
            Self::Hub => "hub -> validator",
            Self::Validator => "validator -> hub",
        }
    }

    fn union_schema(self) -> Schema {
        match self {
            Self::Hub => schema_for!(HubMessage),
            Self::Validator => schema_for!(ValidatorMessage),
        }
    }

    /// Decodes as the peer would, reporting the code the hub would send.
    fn decode(self, text: &str) -> Result<Value, ErrorCode> {
        match self {
            Self::Hub => HubMessage::decode(text)
                .map(|m| serde_json::to_value(m).unwrap())
                .map_err(|e| e.code()),
            Self::Validator => ValidatorMessage::decode(text)
                .map(|m| serde_json::to_value(m).unwrap())
                .map_err(|e| e.code()),
        }
    }
}

// ---------------------------------------------------------------------------
// Generation

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema")
}

/// Every schema file, name -> pretty JSON with a trailing newline.
fn generate() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for dir in [Dir::Hub, Dir::Validator] {
        let mut union = dir.union_schema().to_value();
        union["$comment"] = COMMENT.into();
        for variant in union["oneOf"].as_array().unwrap() {
            let ty = variant["properties"]["type"]["const"].as_str().unwrap();
            let file = format!("{ty}.json");
            files.insert(file, render(message_schema(dir, &union, variant, ty)));
        }
        files.insert(dir.union_file().to_string(), render(union));
    }
    files
}

/// One variant of a union as a schema of its own: the whole frame, `type`
/// included, with just the definitions it refers to.
fn message_schema(dir: Dir, union: &Value, variant: &Value, ty: &str) -> Value {
    let defs = union["$defs"].as_object().unwrap();
    let rust = HUB_TYPES
        .iter()
        .chain(VALIDATOR_TYPES)
        .find(|(t, _)| *t == ty)
        .map(|(_, r)| *r)
        .unwrap_or_else(|| panic!("`{ty}` is missing from HUB_TYPES/VALIDATOR_TYPES"));
    // Hub messages refer to their struct; validator messages are inlined
    // (they refuse unknown fields, so schemars folds `type` into them).
    let doc = variant["description"]
        .as_str()
        .or_else(|| {
            let name = variant["$ref"].as_str()?.strip_prefix("#/$defs/")?;
            defs[name]["description"].as_str()
        })
        .map(|d| format!(" {d}"))
        .unwrap_or_default();
    let mut s = variant.clone();
    s["$schema"] = union["$schema"].clone();
    s["$comment"] = COMMENT.into();
    s["title"] = rust.into();
    s["description"] = format!("The `{ty}` frame, {}.{doc}", dir.arrow()).into();
    let mut needed = BTreeSet::new();
    let mut todo = refs(variant);
    while let Some(name) = todo.pop() {
        if needed.insert(name.clone()) {
            todo.extend(refs(&defs[&name]));
        }
    }
    if !needed.is_empty() {
        s["$defs"] = needed
            .into_iter()
            .map(|n| (n.clone(), defs[&n].clone()))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    s
}

/// Names of the `#/$defs/...` a schema refers to.
fn refs(v: &Value) -> Vec<String> {
    match v {
        Value::Object(m) => m
            .iter()
            .flat_map(|(k, v)| match (k.as_str(), v) {
                ("$ref", Value::String(r)) => r
                    .strip_prefix("#/$defs/")
                    .map(str::to_string)
                    .into_iter()
                    .collect(),
                _ => refs(v),
            })
            .collect(),
        Value::Array(a) => a.iter().flat_map(refs).collect(),
        _ => Vec::new(),
    }
}

/// schemars' own layout (`$schema`, `title`, `description`, `type` first,
/// `$defs` last), keys otherwise sorted whether or not some crate in the
/// build turns on serde_json's `preserve_order`.
fn render(v: Value) -> String {
    let schema = Schema::try_from(sort_keys(v)).unwrap();
    serde_json::to_string_pretty(&schema).unwrap() + "\n"
}

fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<String, Value> =
                m.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

fn validator(schema_text: &str) -> Validator {
    let schema: Value = serde_json::from_str(schema_text).unwrap();
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("not a valid draft 2020-12 schema: {e}"))
}

/// The generated schemas, compiled.
struct Schemas {
    by_file: BTreeMap<String, Validator>,
}

impl Schemas {
    fn new() -> Self {
        let by_file = generate()
            .iter()
            .map(|(name, text)| (name.clone(), validator(text)))
            .collect();
        Self { by_file }
    }

    fn union(&self, dir: Dir) -> &Validator {
        &self.by_file[dir.union_file()]
    }

    fn own(&self, ty: &str) -> &Validator {
        &self.by_file[&format!("{ty}.json")]
    }
}

// ---------------------------------------------------------------------------
// (a) committed files equal the generated ones

/// Compares one committed file with its generated text, or rewrites it.
fn check_file(name: &str, generated: &str, update: bool) {
    let path = schema_dir().join(name);
    if update {
        std::fs::write(&path, generated).unwrap();
        return;
    }
    const HOW: &str = "regenerate with `UPDATE_SCHEMAS=1 cargo test -p protocol --test it schema` \
                       and commit the result";
    let Ok(committed) = std::fs::read_to_string(&path) else {
        panic!("schema/{name} is missing; {HOW}");
    };
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or("the end".to_string(), |i| format!("line {}", i + 1));
        panic!("schema/{name} differs from the Rust types (first at {line}); {HOW}");
    }
}

#[test]
fn committed_schemas_match_the_rust_types() {
    let update = std::env::var("UPDATE_SCHEMAS").is_ok_and(|v| v == "1");
    let files = generate();
    if update {
        std::fs::create_dir_all(schema_dir()).unwrap();
    }
    for (name, text) in &files {
        check_file(name, text, update);
    }
    let on_disk: BTreeSet<String> = std::fs::read_dir(schema_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for stale in on_disk.iter().filter(|f| !files.contains_key(*f)) {
        if update {
            std::fs::remove_file(schema_dir().join(stale)).unwrap();
        } else {
            panic!("schema/{stale} is not generated from any type; delete it");
        }
    }
    // Generation is deterministic.
    assert_eq!(files, generate());
}

#[test]
fn every_variant_has_a_file() {
    let files = generate();
    let mut expected: BTreeSet<String> = HUB_TYPES
        .iter()
        .chain(VALIDATOR_TYPES)
        .map(|(ty, _)| format!("{ty}.json"))
        .collect();
    expected.insert("hub_message.json".into());
    expected.insert("validator_message.json".into());
    assert_eq!(files.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let wire = |t: &[(&'static str, &str)]| t.iter().map(|(ty, _)| *ty).collect::<Vec<_>>();
    assert_eq!(wire(HUB_TYPES), HubMessage::TYPES);
    assert_eq!(wire(VALIDATOR_TYPES), ValidatorMessage::TYPES);
}

// ---------------------------------------------------------------------------
// (b) real samples validate and round-trip

/// The samples' task-token key id.
const KID: &str = "k2025-06";

/// Everything needed to build and re-verify signed samples.
struct World {
    key: SigningKey,
    keyring: Keyring,
    nonce: Nonce,
    now: i64,
}

impl World {
    fn new() -> Self {
        Self {
            key: keypair::generate(),
            keyring: Keyring::random(KID),
            nonce: Nonce::random(),
            now: protocol::now_ms(),
        }
    }

    fn public_key(&self) -> PublicKey {
        PublicKey::from(&self.key)
    }

    fn hello(&self, tags: &[&str]) -> Hello {
        let mut h = Hello {
            public_key: PublicKey([0; 32]),
            region: "eu-west".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            capacity: 32,
            client_version: "validator/0.1.0".into(),
            protocol_versions: SUPPORTED_VERSIONS.to_vec(),
            payout_address: None,
            signature: Signature([0; 64]),
        };
        sign_hello(&self.key, &self.nonce, &mut h);
        h
    }

    fn task(&self, keyword: Option<&str>) -> Task {
        let validator = self.public_key();
        let task_id = Uuid::new_v4();
        let (website_id, round_id, slot) = (42, 918_273, 58_471_230);
        let scheduled_at_ms = self.now - 250;
        let deadline_ms = scheduled_at_ms + 30_000;
        let token = self.keyring.issue(&TokenFields {
            task_id,
            website_id,
            round_id,
            slot,
            scheduled_at_ms,
            validator: &validator,
            deadline_ms,
        });
        Task {
            task_id,
            website_id,
            round_id,
            slot,
            scheduled_at_ms,
            url: "https://example.com/health".into(),
            check: CheckSpec {
                timeout_ms: 10_000,
                expected_status: StatusRange::DEFAULT,
                keyword: keyword.map(str::to_string),
                follow_redirects: true,
            },
            validator,
            deadline_ms,
            token,
        }
    }

    fn result(&self, up: bool) -> CheckResult {
        let task = self.task(None);
        let mut r = if up {
            CheckResult::for_task(&task, CheckStatus::Up, Some(200), 87, None, self.now)
        } else {
            let error = Some("connect: connection refused".to_string());
            CheckResult::for_task(&task, CheckStatus::Down, None, 3, error, self.now)
        };
        sign_result(&self.key, &mut r);
        r
    }

    /// A realistic sample of every variant, and of each optional field both
    /// present and absent.
    fn samples(&self) -> (Vec<HubMessage>, Vec<ValidatorMessage>) {
        let id = Uuid::new_v4();
        let ack = |outcome, code| {
            HubMessage::ResultAck(ResultAck {
                task_id: id,
                outcome,
                code,
            })
        };
        let mut hub = vec![
            HubMessage::Challenge(Challenge {
                nonce: self.nonce,
                hub_id: "hub-3fa9c1".into(),
                protocol_versions: SUPPORTED_VERSIONS.to_vec(),
                server_time_ms: self.now,
            }),
            HubMessage::Welcome(Welcome {
                validator_id: 1_207,
                protocol_version: 1,
                hub_id: "hub-3fa9c1".into(),
                heartbeat_interval_ms: limits::HEARTBEAT_INTERVAL_MS,
                heartbeat_timeout_ms: limits::HEARTBEAT_TIMEOUT_MS,
                limits: Limits {
                    max_frame_bytes: limits::MAX_FRAME_BYTES as u32,
                    max_messages_per_sec: limits::MAX_MESSAGES_PER_SEC,
                    message_burst: limits::MESSAGE_BURST,
                    auth_timeout_ms: limits::AUTH_TIMEOUT_MS,
                },
            }),
            HubMessage::HeartbeatAck(HeartbeatAck {
                seq: 17,
                server_time_ms: self.now,
            }),
            HubMessage::Task(self.task(None)),
            HubMessage::Task(self.task(Some("All systems operational"))),
            ack(AckOutcome::Stored, None),
            ack(AckOutcome::Duplicate, None),
            ack(AckOutcome::Rejected, Some(ErrorCode::DeadlinePassed)),
            HubMessage::Reconnect(Reconnect {
                reason: "hub is shutting down".into(),
                retry_after_ms: 500,
                urls: Vec::new(),
            }),
            HubMessage::Reconnect(Reconnect {
                reason: "rebalancing".into(),
                retry_after_ms: 1_000,
                urls: vec!["wss://hub-2.example.net/ws".into()],
            }),
        ];
        hub.extend(
            ErrorCode::ALL
                .iter()
                .map(|c| HubMessage::error(*c, format!("{} happened", c.as_str()))),
        );
        let validator = vec![
            ValidatorMessage::Hello(self.hello(&["isp:hetzner", "ipv6"])),
            ValidatorMessage::Hello(self.hello(&[])),
            ValidatorMessage::Heartbeat(Heartbeat {
                seq: 17,
                in_flight: 3,
            }),
            ValidatorMessage::Result(self.result(true)),
            ValidatorMessage::Result(self.result(false)),
        ];
        (hub, validator)
    }

    /// The cryptography still holds after a round trip through JSON.
    fn verify(&self, m: &ValidatorMessage) {
        match m {
            ValidatorMessage::Hello(h) => {
                verify_hello(&self.nonce, h).expect("hello signature survives JSON");
            }
            ValidatorMessage::Result(r) => {
                let vk = r.validator.verifying_key().unwrap();
                verify_result(&vk, r).expect("result signature survives JSON");
                self.verify_token(r);
            }
            ValidatorMessage::Heartbeat(_) => {}
        }
    }

    /// The token a result carries is the one the keyring issued for it.
    fn verify_token(&self, r: &CheckResult) {
        let fields = r.token_fields();
        self.keyring
            .verify(&r.token, &fields)
            .expect("token survives JSON");
    }
}

/// One frame as text: valid against its own schema and its direction's
/// union, and decoding then re-encoding it gives back the same JSON.
fn check_sample(schemas: &Schemas, dir: Dir, text: &str) {
    let value: Value = serde_json::from_str(text).unwrap();
    let ty = value["type"]
        .as_str()
        .expect("every frame has a string type");
    assert_eq!(Dir::of_type(ty), Some(dir), "{ty} goes the wrong way");
    for (what, v) in [("own", schemas.own(ty)), ("union", schemas.union(dir))] {
        let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{ty}: rejected by the {what} schema: {errors:?}\n{text}"
        );
    }
    let decoded = dir
        .decode(text)
        .unwrap_or_else(|c| panic!("{ty}: does not decode ({c:?}):\n{text}"));
    assert_eq!(decoded, value, "{ty}: the round trip changed it");
}

#[test]
fn every_variant_validates_and_round_trips() {
    let schemas = Schemas::new();
    let world = World::new();
    let (hub, validator) = world.samples();
    let mut seen = BTreeSet::new();
    for m in &hub {
        let text = m.encode();
        check_sample(&schemas, Dir::Hub, &text);
        assert_eq!(&HubMessage::decode(&text).unwrap(), m);
        seen.insert(serde_json::from_str::<Value>(&text).unwrap()["type"].to_string());
    }
    for m in &validator {
        let text = m.encode();
        check_sample(&schemas, Dir::Validator, &text);
        let back = ValidatorMessage::decode(&text).unwrap();
        assert_eq!(&back, m);
        world.verify(&back);
        seen.insert(serde_json::from_str::<Value>(&text).unwrap()["type"].to_string());
    }
    assert_eq!(
        seen.len(),
        HUB_TYPES.len() + VALIDATOR_TYPES.len(),
        "a sample of every variant"
    );
    // A result made from a task (as a validator does) carries a token that
    // still verifies: the task's fields and the result's line up.
    let HubMessage::Task(t) = &hub[3] else {
        panic!("hub[3] is a task")
    };
    let r = CheckResult::for_task(t, CheckStatus::Up, Some(204), 5, None, world.now);
    world.verify_token(&r);
}

// ---------------------------------------------------------------------------
// (c) invalid documents fail both; tolerated ones pass both

/// Whether the schemas and the decoder both accept `doc` (`Ok`), or both
/// refuse it (`Err` with the code the hub, or `HubMessage::decode`, reports).
fn check(schemas: &Schemas, dir: Dir, doc: &Value, expected: Result<(), ErrorCode>, why: &str) {
    let text = doc.to_string();
    let decoded = dir.decode(&text).map(|_| ());
    assert_eq!(decoded, expected, "{why}: serde\n{text}");
    let ok = expected.is_ok();
    let by_union = schemas.union(dir).is_valid(doc);
    assert_eq!(by_union, ok, "{why}: {}\n{text}", dir.union_file());
    // Its own schema too, when it claims a type of this direction.
    if let Some(ty) = doc["type"]
        .as_str()
        .filter(|ty| Dir::of_type(ty) == Some(dir))
    {
        assert_eq!(
            schemas.own(ty).is_valid(doc),
            ok,
            "{why}: {ty}.json\n{text}"
        );
    }
}

/// `msg` as JSON with `field` set to `value`.
fn with(msg: &impl serde::Serialize, field: &str, value: Value) -> Value {
    let mut v = serde_json::to_value(msg).unwrap();
    v[field] = value;
    v
}

/// `msg` as JSON without `field`.
fn without(msg: &impl serde::Serialize, field: &str) -> Value {
    let mut v = serde_json::to_value(msg).unwrap();
    v.as_object_mut().unwrap().remove(field);
    v
}

#[test]
fn schema_and_types_refuse_the_same_documents() {
    let s = Schemas::new();
    let w = World::new();
    let (hub, _) = w.samples();
    let (challenge, welcome, task, stored) = (&hub[0], &hub[1], &hub[3], &hub[5]);
    let rejected = &hub[7];
    let hello = ValidatorMessage::Hello(w.hello(&["ipv6"]));
    let heartbeat = ValidatorMessage::Heartbeat(Heartbeat {
        seq: 1,
        in_flight: 0,
    });
    let result = ValidatorMessage::Result(w.result(true));
    let (v, h) = (Dir::Validator, Dir::Hub);
    let token = |mac: String| json!({"kid": KID, "mac": mac});
    let malformed =
        |dir, doc: Value, why| check(&s, dir, &doc, Err(ErrorCode::MalformedFrame), why);
    let unknown = |dir, doc: Value, why| check(&s, dir, &doc, Err(ErrorCode::UnknownType), why);
    let accepted = |dir, doc: Value, why| check(&s, dir, &doc, Ok(()), why);

    // Missing fields.
    malformed(v, without(&hello, "signature"), "hello without signature");
    malformed(v, without(&result, "token"), "result without token");
    malformed(h, without(welcome, "limits"), "welcome without limits");
    malformed(v, without(&heartbeat, "type"), "no type at all");
    // Wrong types and ranges.
    malformed(v, with(&heartbeat, "seq", json!("1")), "seq as a string");
    malformed(
        v,
        with(&heartbeat, "in_flight", json!(-1)),
        "negative in_flight",
    );
    malformed(
        v,
        with(&result, "http_status", json!(70_000)),
        "http_status beyond u16",
    );
    malformed(
        v,
        with(&result, "status", json!("sideways")),
        "unknown status",
    );
    malformed(
        v,
        with(&result, "task_id", json!("not-a-uuid")),
        "task_id not a UUID",
    );
    malformed(
        h,
        with(rejected, "outcome", json!("maybe")),
        "unknown ack outcome",
    );
    // A code this crate does not know decodes as `unknown` (forward
    // compatibility), while the schema, which describes what hubs send,
    // lists only real codes: the one deliberate difference.
    let future = with(rejected, "code", json!("from_a_newer_hub"));
    assert!(
        matches!(
            HubMessage::decode(&future.to_string()),
            Ok(HubMessage::ResultAck(a)) if a.code == Some(ErrorCode::Unknown)
        ),
        "unknown codes decode as `unknown`"
    );
    // Bad base58 and hex.
    let not_base58 = json!("0OIl".repeat(11));
    malformed(
        v,
        with(&result, "validator", not_base58),
        "base58 has no 0, O, I or l",
    );
    malformed(
        v,
        with(&hello, "public_key", json!("1111")),
        "public key too short",
    );
    malformed(
        v,
        with(&hello, "signature", json!("3yZe7d")),
        "signature too short",
    );
    malformed(
        v,
        with(&result, "token", token("zz".repeat(32))),
        "mac not hex",
    );
    malformed(
        h,
        with(task, "token", token("00".into())),
        "mac of one byte",
    );
    malformed(
        h,
        with(challenge, "nonce", json!("ab".repeat(31))),
        "nonce of 31 bytes",
    );
    // Unknown fields: refused from validators, tolerated from hubs.
    malformed(
        v,
        with(&result, "reward", json!(1_000_000)),
        "unknown field on result",
    );
    malformed(
        v,
        with(&hello, "admin", json!(true)),
        "unknown field on hello",
    );
    malformed(
        v,
        with(&heartbeat, "load", json!(0.5)),
        "unknown field on heartbeat",
    );
    accepted(
        h,
        with(task, "priority", json!(2)),
        "a newer hub's extra field on task",
    );
    accepted(
        h,
        with(welcome, "region_hint", json!("eu")),
        "a newer hub's extra field",
    );
    // `null` is read as absent for every optional field.
    accepted(v, with(&hello, "tags", json!(null)), "hello tags: null");
    accepted(v, with(&result, "error", json!(null)), "result error: null");
    accepted(
        v,
        with(&result, "http_status", json!(null)),
        "result http_status: null",
    );
    accepted(
        h,
        with(task, "check", {
            let mut c = serde_json::to_value(task).unwrap()["check"].clone();
            c["keyword"] = json!(null);
            c
        }),
        "task keyword: null",
    );
    // Unknown or misdirected types.
    unknown(v, json!({"type": "launch_missiles"}), "unknown type");
    unknown(
        h,
        json!({"type": "launch_missiles"}),
        "unknown type from a hub",
    );
    unknown(
        v,
        with(task, "type", json!("task")),
        "a hub message from a validator",
    );
    unknown(
        h,
        with(&heartbeat, "type", json!("heartbeat")),
        "a validator message from a hub",
    );
    // Optional fields may be absent or null.
    accepted(
        v,
        with(&result, "error", Value::Null),
        "null optional field",
    );
    accepted(v, without(&hello, "tags"), "hello without tags");
    accepted(h, with(stored, "code", Value::Null), "ack with a null code");
}

// ---------------------------------------------------------------------------
// docs/protocol.md

fn protocol_md() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every ```json block in docs/protocol.md is a valid frame: it passes its
/// schemas and decodes to exactly what it shows.
#[test]
fn docs_examples_are_valid_frames() {
    let schemas = Schemas::new();
    let doc = protocol_md();
    let blocks: Vec<&str> = doc
        .split("```json\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    let mut types = BTreeSet::new();
    for block in blocks {
        let value: Value = serde_json::from_str(block)
            .unwrap_or_else(|e| panic!("docs example is not JSON ({e}):\n{block}"));
        let ty = value["type"]
            .as_str()
            .unwrap_or_else(|| panic!("no type:\n{block}"));
        let dir = Dir::of_type(ty).unwrap_or_else(|| panic!("unknown type {ty}"));
        check_sample(&schemas, dir, block);
        // The examples obey the field rules too, not only the shape.
        match ValidatorMessage::decode(block) {
            Ok(ValidatorMessage::Hello(h)) => limits::check_hello(&h).unwrap(),
            Ok(ValidatorMessage::Result(r)) => limits::check_result(&r).unwrap(),
            _ => {}
        }
        types.insert(ty.to_string());
    }
    let all: BTreeSet<String> = HUB_TYPES
        .iter()
        .chain(VALIDATOR_TYPES)
        .map(|(t, _)| t.to_string())
        .collect();
    assert_eq!(
        types, all,
        "docs/protocol.md has an example of every message"
    );
}

/// The error-code table names every code, once.
#[test]
fn docs_list_every_error_code() {
    let doc = protocol_md();
    for c in ErrorCode::ALL {
        let row = format!("| `{}` |", c.as_str());
        assert_eq!(
            doc.lines().filter(|l| l.starts_with(&row)).count(),
            1,
            "docs/protocol.md needs one error-table row starting `{row}`"
        );
    }
}

/// The hello field rules in the message table and the limits table are the
/// ones `protocol::limits` enforces.
#[test]
fn docs_state_the_hello_field_rules() {
    let doc = protocol_md();
    let row = |start: &str| -> &str {
        let mut rows = doc.lines().filter(|l| l.starts_with(start));
        let r = rows
            .next()
            .unwrap_or_else(|| panic!("no row starting {start}"));
        assert!(rows.next().is_none(), "one row starting {start}");
        r
    };
    let region = format!(
        "1-{} bytes of `{}`",
        limits::MAX_REGION_LEN,
        limits::REGION_CHARS
    );
    let tags = format!(
        "at most {}; each 1-{} bytes of `{}`",
        limits::MAX_TAGS,
        limits::MAX_TAG_LEN,
        limits::TAG_CHARS
    );
    let capacity = format!("{}..={}", limits::MIN_CAPACITY, limits::MAX_CAPACITY);
    let status = format!("{:?}", limits::HTTP_STATUS_RANGE);
    for (start, want) in [
        ("| `hello.region` |", &region),
        ("| `region` |", &region),
        ("| `hello.tags` |", &tags),
        ("| `hello.capacity` |", &capacity),
        ("| `capacity` |", &capacity),
        ("| `result.http_status` |", &status),
    ] {
        assert!(
            row(start).contains(want.as_str()),
            "{start} row should say {want}"
        );
    }
    let tag_row = row("| `tags` |");
    assert!(
        tag_row.contains(&format!(
            "At most {}, each 1-{} bytes of `{}`",
            limits::MAX_TAGS,
            limits::MAX_TAG_LEN,
            limits::TAG_CHARS
        )),
        "{tag_row}"
    );
}

/// The refused ports and the refusal texts in "How a check is made" are the
/// ones `protocol::target` and `limits::BLOCKED_PORTS` apply.
#[test]
fn docs_list_the_refused_ports_and_refusal_texts() {
    use protocol::target::Refused;
    let doc = protocol_md().replace('\n', " ");
    let start = doc.find("calls bad (").expect("the bad-ports paragraph");
    let list = &doc[start..];
    let list = &list[list.find("):").expect("the port list") + 2
        ..list.find("(`BLOCKED_PORTS`)").expect("its end")];
    let mut documented = BTreeSet::new();
    for item in list
        .split(',')
        .map(|p| p.trim().trim_matches(|c: char| c == ' '))
    {
        let item: String = item.split_whitespace().collect();
        match item.split_once('-') {
            Some((a, b)) => {
                documented.extend(a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap())
            }
            None => {
                documented.insert(item.parse::<u16>().unwrap_or_else(|_| panic!("{item:?}")));
            }
        }
    }
    let code: BTreeSet<u16> = limits::BLOCKED_PORTS.iter().copied().collect();
    assert_eq!(documented, code, "docs/protocol.md lists BLOCKED_PORTS");
    for text in [
        Refused::Address("10.0.0.1".parse().unwrap()).to_string(),
        Refused::Port(25).to_string(),
    ] {
        let in_doc = text.replace(' ', "");
        assert!(
            doc.replace(' ', "").contains(&in_doc),
            "docs/protocol.md quotes {text:?}"
        );
    }
}
