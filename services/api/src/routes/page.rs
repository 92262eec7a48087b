//! Cursor pages: lists read `limit + 1` rows after the cursor in a stable
//! order, keep `limit`, and hand out the last kept row's sort key as the
//! next cursor (opaque: URL-safe base64 of its parts joined by `:`).

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::error::ApiError;

/// Page sizes.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 100;

use store::MAX_CURSOR_MS;

/// A page size within bounds.
pub fn page_size(limit: Option<u32>) -> Result<i64, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(i64::from(n)),
        _ => Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        )),
    }
}

fn bad() -> ApiError {
    ApiError::invalid("cursor", "not a cursor this API gave out")
}

/// The `N` parts of a cursor this API gave out.
fn parts<const N: usize>(c: &str) -> Result<[String; N], ApiError> {
    let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let v: Vec<String> = s.split(':').map(str::to_string).collect();
    v.try_into().map_err(|_| bad())
}

/// A one-part cursor (an id), if given.
pub fn after<T: FromStr>(cursor: Option<&str>) -> Result<Option<T>, ApiError> {
    cursor
        .map(|c| {
            let [id] = parts::<1>(c)?;
            id.parse().map_err(|_| bad())
        })
        .transpose()
}

/// A `(time in ms, tie-breaker)` cursor, if given; the time must be 0 to
/// [`MAX_CURSOR_MS`].
pub fn before<T: FromStr>(cursor: Option<&str>) -> Result<Option<(i64, T)>, ApiError> {
    cursor
        .map(|c| {
            let [ms, tie] = parts::<2>(c)?;
            let ms = ms
                .parse()
                .ok()
                .filter(|ms| (0..=MAX_CURSOR_MS).contains(ms))
                .ok_or_else(bad)?;
            Ok((ms, tie.parse().map_err(|_| bad())?))
        })
        .transpose()
}

/// Keeps `limit` of the `limit + 1` rows read; the next cursor is `key` of
/// the last kept row, when a row was left over.
pub fn cut<T>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit.max(0) as usize);
    let next = if more {
        rows.last().map(|r| URL_SAFE_NO_PAD.encode(key(r)))
    } else {
        None
    };
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let (rows, next) = cut(
            vec![(1_700_000_000_000i64, 42i64), (1, 1), (0, 0)],
            1,
            |r| format!("{}:{}", r.0, r.1),
        );
        assert_eq!(rows.len(), 1);
        let next = next.expect("a row was left over");
        assert_eq!(
            before::<i64>(Some(&next)).unwrap(),
            Some((1_700_000_000_000, 42))
        );
        assert!(after::<i64>(Some(&next)).is_err(), "two parts are not one");
        assert!(after::<i64>(Some("%%%")).is_err());
        assert_eq!(after::<i64>(None).unwrap(), None);
        let (_, none) = cut(vec![1, 2], 2, |r| r.to_string());
        assert_eq!(none, None, "no cursor on the last page");
        for forged in ["-1:1", "9223372036854775807:1", "1:x"] {
            let c = URL_SAFE_NO_PAD.encode(forged);
            assert!(before::<i64>(Some(&c)).is_err(), "{forged}");
        }
        assert_eq!(page_size(None).unwrap(), 50);
        assert!(page_size(Some(0)).is_err() && page_size(Some(101)).is_err());
    }
}
