//! test-support's own tests, one binary.

mod proxy;
mod redis;
mod solana;
