//! WAL segments, LSNs, timeline history files and the archive's listing, read one way by every
//! module that looks at the archive (the restore drill's end-of-archive proof, the archive's
//! health and continuity checks).
//!
//! A segment is named by its timeline and its number (the byte position divided by the segment
//! size, which `wal_segment_size` sets: 16 MiB unless initdb chose otherwise), so the names of
//! one position differ with the segment size and every function here takes it.

use serde_json::Value;
use std::collections::BTreeMap;

/// A WAL segment: its timeline and its number (bytes / segment size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Segment {
    /// The timeline.
    pub tli: u32,
    /// The segment number.
    pub number: u64,
}

impl Segment {
    /// Parse a 24-hex-digit segment name (`000000010000000000000003`).
    pub fn parse(name: &str, seg_size: u64) -> Option<Segment> {
        let hex = name.get(..24)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let tli = u32::from_str_radix(&hex[..8], 16).ok()?;
        let log = u64::from_str_radix(&hex[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&hex[16..], 16).ok()?;
        let per_log = per_log(seg_size);
        (seg < per_log).then(|| Segment {
            tli,
            number: log.saturating_mul(per_log).saturating_add(seg),
        })
    }

    /// The segment holding byte `lsn` on timeline `tli`.
    pub fn of_lsn(tli: u32, lsn: u64, seg_size: u64) -> Segment {
        Segment {
            tli,
            number: lsn / seg_size.max(1),
        }
    }

    /// Its file name.
    pub fn name(self, seg_size: u64) -> String {
        let per_log = per_log(seg_size);
        format!(
            "{:08X}{:08X}{:08X}",
            self.tli,
            self.number / per_log,
            self.number % per_log
        )
    }
}

fn per_log(seg_size: u64) -> u64 {
    (0x1_0000_0000u64 / seg_size.max(1)).max(1)
}

/// Parse an LSN (`0/3000060`).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX)).then_some((hi << 32) | lo)
}

/// One line of a timeline history file: `parent-tli switch-lsn reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The timeline that ended.
    pub tli: u32,
    /// Where it ended (the new timeline starts there).
    pub lsn: u64,
    /// Why (`no recovery target specified`, `before 2025-... `, ...).
    pub reason: String,
}

/// Parse a history file (comments and blank lines skipped).
pub fn parse_history(text: &str) -> Vec<Switch> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let tli = fields.next()?.parse().ok()?;
            let lsn = parse_lsn(fields.next()?)?;
            Some(Switch {
                tli,
                lsn,
                reason: fields.collect::<Vec<_>>().join(" "),
            })
        })
        .collect()
}

/// The archive's full segments (no `.partial`, `.backup` or `.history` files), with the time
/// each was stored (seconds since the epoch), and the timelines it holds a history file for.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    /// Segment -> storage time.
    pub segments: BTreeMap<Segment, i64>,
    /// Timelines with a `NNNNNNNN.history` file.
    pub histories: Vec<u32>,
}

impl Listing {
    /// Read `pgbackrest repo-ls --recurse --output=json archive/<stanza>/<archive id>`: keys are
    /// paths such as `0000000100000000/000000010000000000000003-<sha1>.gz`.
    pub fn parse(json: &str, seg_size: u64) -> Result<Listing, String> {
        let value: Value = serde_json::from_str(json.trim())
            .map_err(|e| format!("repo-ls printed JSON that does not parse: {e}"))?;
        let entries = value
            .as_object()
            .ok_or("repo-ls printed JSON that is not an object")?;
        let mut listing = Listing::default();
        for (path, entry) in entries {
            if entry["type"] != "file" {
                continue;
            }
            let file = path.rsplit('/').next().unwrap_or(path);
            if let Some(tli) = file
                .strip_suffix(".history")
                .filter(|t| t.len() == 8)
                .and_then(|t| u32::from_str_radix(t, 16).ok())
            {
                listing.histories.push(tli);
                continue;
            }
            // A full segment is `NAME-<sha1>[.ext]`; `NAME.partial-...` and `NAME.XXXX.backup`
            // are not.
            if file.as_bytes().get(24) != Some(&b'-') {
                continue;
            }
            if let Some(seg) = Segment::parse(file, seg_size) {
                listing
                    .segments
                    .insert(seg, entry["time"].as_i64().unwrap_or_default());
            }
        }
        Ok(listing)
    }

    /// The newest segment of timeline `tli`.
    pub fn newest_on(&self, tli: u32) -> Option<Segment> {
        self.segments.keys().rev().find(|s| s.tli == tli).copied()
    }

    /// The newest timeline the archive holds WAL or history for.
    pub fn newest_tli(&self) -> Option<u32> {
        let by_segments = self.segments.keys().map(|s| s.tli).max();
        by_segments
            .into_iter()
            .chain(self.histories.iter().copied())
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 * 1024 * 1024;

    fn listing(names: &[&str]) -> Listing {
        let map: serde_json::Map<String, Value> = names
            .iter()
            .map(|n| {
                (
                    format!("0000000100000000/{n}"),
                    serde_json::json!({"type": "file", "time": 100}),
                )
            })
            .collect();
        Listing::parse(&Value::Object(map).to_string(), MB16).unwrap()
    }

    #[test]
    fn segment_names_round_trip_and_lsns_map_to_segments() {
        let s = Segment::parse("0000000200000001000000FE", MB16).unwrap();
        assert_eq!((s.tli, s.number), (2, 256 + 254));
        assert_eq!(s.name(MB16), "0000000200000001000000FE");
        assert_eq!(
            Segment::of_lsn(1, parse_lsn("1/FE000010").unwrap(), MB16),
            s.with_tli(1)
        );
        assert_eq!(Segment::parse("000000010000000000000100", MB16), None);
        assert_eq!(parse_lsn("0/3000060"), Some(0x300_0060));
    }

    impl Segment {
        fn with_tli(self, tli: u32) -> Segment {
            Segment { tli, ..self }
        }
    }

    #[test]
    fn only_full_segments_count() {
        let l = listing(&[
            "000000010000000000000003-aaaa.gz",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000004.partial-bbbb.gz",
            "00000002.history-cccc.gz",
        ]);
        assert_eq!(l.segments.len(), 1);
        let l2 = listing(&["00000002.history"]);
        assert_eq!(l2.histories, [2]);
    }
}
