//! Typed ids and the round's state, so a website id cannot travel where a
//! round id is wanted and a status is one of the four the schema allows.
//!
//! The ids are `bigserial` columns (`websites.id`, `rounds.id`,
//! `validators.id`) and encode as `int8`; [`RoundStatus`] is the `text`
//! column `rounds.status` (a `CHECK` keeps it to `open`, `up`, `down`,
//! `unknown`; see `migrations/*_init.sql`).

use std::fmt;
use std::str::FromStr;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type)]
        #[sqlx(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// `websites.id`.
    WebsiteId
);
id_type!(
    /// `rounds.id`.
    RoundId
);
id_type!(
    /// `validators.id`.
    ValidatorId
);
id_type!(
    /// `accounts.id`: a website owner.
    AccountId
);
id_type!(
    /// `api_keys.id`.
    ApiKeyId
);

/// A round's state: `Open` until it is closed by majority (`Up`, `Down`) or
/// without one (`Unknown`).
///
/// Decoding refuses any other text. The methods the hub calls still return
/// the status as a `String`, so a later migration that adds a status cannot
/// make an older hub's row decoding fail during a rolling upgrade; a caller
/// switching to this type should decode with `try_get` and decide what an
/// unknown status means there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoundStatus {
    Open,
    Up,
    Down,
    Unknown,
}

impl RoundStatus {
    /// The value stored in `rounds.status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RoundStatus::Open => "open",
            RoundStatus::Up => "up",
            RoundStatus::Down => "down",
            RoundStatus::Unknown => "unknown",
        }
    }

    pub const fn is_closed(self) -> bool {
        !matches!(self, RoundStatus::Open)
    }
}

impl fmt::Display for RoundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `rounds.status` value outside the four the schema allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown round status {0:?}")]
pub struct UnknownRoundStatus(pub String);

impl FromStr for RoundStatus {
    type Err = UnknownRoundStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(RoundStatus::Open),
            "up" => Ok(RoundStatus::Up),
            "down" => Ok(RoundStatus::Down),
            "unknown" => Ok(RoundStatus::Unknown),
            _ => Err(UnknownRoundStatus(s.to_owned())),
        }
    }
}

// Text on the wire, like the column: the derive's `type_name` would name a
// PostgreSQL enum type, which the schema does not have.
impl Type<Postgres> for RoundStatus {
    fn type_info() -> PgTypeInfo {
        <str as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <str as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for RoundStatus {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Postgres>>::encode(self.as_str(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for RoundStatus {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(<&str as Decode<Postgres>>::decode(value)?.parse()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_status_round_trips_through_its_text() {
        for s in [
            RoundStatus::Open,
            RoundStatus::Up,
            RoundStatus::Down,
            RoundStatus::Unknown,
        ] {
            assert_eq!(s.as_str().parse::<RoundStatus>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(
            "UP".parse::<RoundStatus>(),
            Err(UnknownRoundStatus("UP".into()))
        );
        assert!(!RoundStatus::Open.is_closed());
        assert!(RoundStatus::Unknown.is_closed());
    }
}
