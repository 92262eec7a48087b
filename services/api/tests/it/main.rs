//! The api's integration tests, one binary: the real service on a loopback
//! port, a fresh PostgreSQL database per test, reqwest as the client.

mod accounts;
mod alerts;
mod common;
mod conventions;
mod dashboard;
mod metrics_doc;
mod reads;
mod schemathesis;
mod tenancy;
mod websites;
