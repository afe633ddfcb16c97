//! UTC calendar time without a time crate: modules name backup files (`2026-11-24@00:00:00`, as
//! Ansible does) and date what they report.

/// Seconds since the epoch now (0 before it, which a sane clock never is).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// UTC `[year, month, day, hour, minute, second]` of `secs` seconds since the epoch (before it:
/// the epoch).
pub fn utc_fields(secs: i64) -> [i64; 6] {
    let secs = secs.max(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    [year, month, day, rem / 3600, rem % 3600 / 60, rem % 60]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(utc_fields(0), [1970, 1, 1, 0, 0, 0]);
        assert_eq!(utc_fields(951_782_400 + 3661), [2000, 2, 29, 1, 1, 1]);
        assert_eq!(utc_fields(1_795_478_400), [2026, 11, 24, 0, 0, 0]);
        assert_eq!(utc_fields(-5), [1970, 1, 1, 0, 0, 0]);
    }
}
