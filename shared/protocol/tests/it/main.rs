//! The protocol crate's integration tests, one binary: the JSON Schemas and docs examples (`schema`), and the signed byte layouts re-derived from docs/protocol.md (`vectors`).

mod schema;
mod vectors;
