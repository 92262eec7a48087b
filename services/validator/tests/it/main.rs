//! The validator's integration tests, one binary.

mod cli;
mod images;
mod session;
