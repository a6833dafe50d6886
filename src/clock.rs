//! The process's clock: seconds for records and lifetimes, and
//! milliseconds that never repeat for findings' `UpdatedAt`.

/// Milliseconds since the epoch, strictly increasing within this process:
/// a finding's `UpdatedAt`. Security Hub ignores an update not newer than
/// the one it holds, so two decisions this process makes about one
/// instance, even within one millisecond, must not share a time. (Across
/// processes, decisions are stamped where they are made, never where they
/// are filed: the outputs queue does not keep order, and an older decision
/// filed later must lose.)
pub fn stamp_ms() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Seconds since the epoch, by this machine's clock.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps_never_repeat_even_within_one_millisecond() {
        // Thousands of stamps take a few milliseconds: a clock read as is
        // would repeat itself.
        let stamps: Vec<u64> = (0..10_000).map(|_| super::stamp_ms()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]));
        let wall = super::now_secs() * 1000;
        assert!(stamps[0] + 5_000 >= wall, "{} against {wall}", stamps[0]);
    }
}
