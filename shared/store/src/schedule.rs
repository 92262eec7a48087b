//! Where in its interval a website is checked: the phase every hub derives
//! from the website's id (the hub's `rounds::scheduler::Schedule`), kept
//! here so that the load tool, which picks website ids to land in a given
//! second (`loadtest burst`), computes exactly what the hubs will.

use crate::WebsiteId;

/// The offset of `website`'s slots in its interval, in ms, in
/// `0..interval_secs * 1000`: its slots are due at `phase + n * interval`
/// (Unix ms). An interval of 0 counts as 1 s. A fixed hash of the id
/// (SplitMix64; std's hasher is randomly seeded), so it never depends on
/// the process and sites added together do not fire together.
pub fn schedule_phase_ms(website: WebsiteId, interval_secs: u32) -> i64 {
    let interval_ms = u64::from(interval_secs.max(1)) * 1000;
    (splitmix64(website.0 as u64) % interval_ms) as i64
}

/// SplitMix64's output function.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned: a change here moves every website's checks on every hub
    /// (and a cluster mixing versions would run some slots twice).
    #[test]
    fn phases_are_pinned() {
        for (id, interval, phase) in [
            (0, 60, 27_535),
            (1, 60, 2_465),
            (42, 60, 35_413),
            (42, 1, 413),
            (1 << 40, 60, 13_641),
            (-1, 60, 23_936),
            (7, 86_400, 2_774_487),
            (5, 0, 618),
        ] {
            assert_eq!(
                schedule_phase_ms(WebsiteId(id), interval),
                phase,
                "website {id} at {interval} s"
            );
        }
    }

    #[test]
    fn phases_stay_inside_the_interval() {
        for id in 0..2_000 {
            let p = schedule_phase_ms(WebsiteId(id), 60);
            assert!((0..60_000).contains(&p), "{id}: {p}");
        }
    }
}
