//! Handlers, one module per resource.

pub mod accounts;
pub mod alerts;
pub mod keys;
pub mod page;
pub mod reads;
pub mod sites;
