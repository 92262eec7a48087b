//! Handlers, one module per resource.

pub mod accounts;
pub mod keys;
pub mod page;
pub mod reads;
pub mod sites;
