//! What PostgreSQL says about WAL archiving: `pg_stat_archiver`, the settings that matter and,
//! on the primary only, the current WAL position (`pg_current_wal_lsn()` fails in recovery).

use pgbackrest::wal::{parse_lsn, Segment};

/// The query: one row. `pg_walfile_name()` and `pg_current_wal_lsn()` are only asked outside
/// recovery (a `CASE` evaluates only the branch it takes).
pub const QUERY: &str = "SELECT pg_is_in_recovery(), a.archived_count, a.last_archived_wal, \
    extract(epoch FROM a.last_archived_time)::int8, a.failed_count, a.last_failed_wal, \
    extract(epoch FROM a.last_failed_time)::int8, extract(epoch FROM a.stats_reset)::int8, \
    (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), \
    (SELECT setting FROM pg_settings WHERE name = 'archive_timeout'), \
    current_setting('archive_mode'), \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END \
    FROM pg_stat_archiver a";

/// The row, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archiver {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// `archived_count`.
    pub archived_count: i64,
    /// `last_archived_wal`.
    pub last_archived_wal: Option<String>,
    /// `last_archived_time`, seconds since the epoch.
    pub last_archived_time: Option<i64>,
    /// `failed_count`.
    pub failed_count: i64,
    /// `last_failed_wal`.
    pub last_failed_wal: Option<String>,
    /// `last_failed_time`, seconds since the epoch.
    pub last_failed_time: Option<i64>,
    /// `stats_reset`, seconds since the epoch.
    pub stats_reset: Option<i64>,
    /// `wal_segment_size`, bytes.
    pub seg_size: u64,
    /// `archive_timeout`, seconds.
    pub archive_timeout: i64,
    /// `archive_mode`.
    pub archive_mode: String,
    /// `pg_current_wal_lsn()` as a byte position (primary only).
    pub current_lsn: Option<u64>,
    /// The segment being written (primary only).
    pub current_segment: Option<Segment>,
}

/// Parse the row of [`QUERY`] (values as text, `None` for NULL).
pub fn parse(row: &[Option<String>]) -> Result<Archiver, String> {
    let field = |i: usize| row.get(i).cloned().flatten();
    let int = |i: usize| field(i).and_then(|v| v.parse::<i64>().ok());
    let seg_size = int(8)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| s.is_power_of_two())
        .ok_or_else(|| format!("wal_segment_size: unexpected value {:?}", field(8)))?;
    let current_lsn = field(11).as_deref().and_then(parse_lsn);
    // The segment holding the next byte to write: `pg_walfile_name()` names the previous one
    // when the position is exactly at a segment boundary (just after a switch), so only its
    // timeline is taken.
    let current_segment = field(12)
        .and_then(|n| Segment::parse(&n, seg_size))
        .zip(current_lsn)
        .map(|(s, lsn)| Segment::of_lsn(s.tli, lsn, seg_size));
    Ok(Archiver {
        in_recovery: field(0).as_deref() == Some("t"),
        archived_count: int(1).unwrap_or_default(),
        last_archived_wal: field(2),
        last_archived_time: int(3),
        failed_count: int(4).unwrap_or_default(),
        last_failed_wal: field(5),
        last_failed_time: int(6),
        stats_reset: int(7),
        seg_size,
        archive_timeout: int(9).unwrap_or_default(),
        archive_mode: field(10).unwrap_or_default(),
        current_lsn,
        current_segment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_owned)).collect()
    }

    #[test]
    fn a_primary_row_gives_its_position_and_a_standby_row_none() {
        let primary = row(&[
            Some("f"),
            Some("12"),
            Some("00000001000000000000000B"),
            Some("1700000000"),
            Some("3"),
            Some("000000010000000000000009"),
            Some("1690000000"),
            Some("1600000000"),
            Some("16777216"),
            Some("60"),
            Some("on"),
            Some("0/C000060"),
            Some("00000001000000000000000C"),
        ]);
        let a = parse(&primary).unwrap();
        assert!(!a.in_recovery);
        assert_eq!((a.archived_count, a.failed_count), (12, 3));
        assert_eq!(a.current_lsn, Some(0xC00_0060));
        assert_eq!(a.current_segment, Some(Segment { tli: 1, number: 12 }));
        assert_eq!(a.archive_timeout, 60);
        // Just after a switch the position starts segment 13, which pg_walfile_name() does not
        // name.
        let mut switched = primary.clone();
        switched[11] = Some("0/D000000".into());
        let s = parse(&switched).unwrap();
        assert_eq!(s.current_segment, Some(Segment { tli: 1, number: 13 }));
        let mut standby = primary.clone();
        standby[0] = Some("t".into());
        standby[11] = None;
        standby[12] = None;
        let s = parse(&standby).unwrap();
        assert!(s.in_recovery && s.current_segment.is_none() && s.current_lsn.is_none());
        standby[8] = Some("1000".into());
        assert!(parse(&standby).unwrap_err().starts_with("wal_segment_size"));
    }
}
