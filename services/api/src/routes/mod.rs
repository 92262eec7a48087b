//! Handlers, one module per resource.

pub mod accounts;
pub mod alerts;
pub mod dashboard;
pub mod keys;
pub mod page;
pub mod public;
pub mod reads;
pub mod sites;
