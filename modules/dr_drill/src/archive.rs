//! The end-of-archive proof: did replay reach the end of the WAL archive?
//!
//! PostgreSQL ends archive recovery quietly at the first segment `restore_command` cannot fetch
//! (missing, undecryptable, corrupt) and promotes, so "recovery finished" says nothing about how
//! much WAL was replayed. A drill therefore lists the archive before the restore (the segments
//! replay must at least reach), and after the promotion reads where replay ended from the new
//! timeline's history file (its last line: the timeline replayed last and the LSN where it
//! switched, i.e. where replay ended). Replay that stopped before the newest listed segment of
//! its timeline failed: the next segment is missing (`wal_gap`) or there but unusable
//! (`wal_unreadable`). An archive holding a newer timeline than the one replayed is a gap too:
//! that timeline's history could not be fetched.

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

/// What the proof found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Replay reached (at least) the newest segment listed before the restore.
    Complete {
        /// The segment replay ended in.
        end: Segment,
    },
    /// Replay stopped early at a segment missing from the archive.
    Gap {
        /// The segment replay ended in.
        end: Segment,
        /// The first segment it could not fetch (absent from the archive).
        missing: Segment,
        /// The newest segment of the archive it should have reached.
        newest: Segment,
    },
    /// Replay stopped early although the next segment is in the archive (unreadable or corrupt).
    Unreadable {
        /// The segment replay ended in.
        end: Segment,
        /// The archived segment replay could not use.
        segment: Segment,
        /// The newest segment of the archive it should have reached.
        newest: Segment,
    },
    /// The archive holds no full segment at all (a backup's own WAL is always archived: the
    /// archive is gone, or was never the backup's).
    EmptyArchive {
        /// The segment replay ended in.
        end: Segment,
    },
    /// The archive holds a newer timeline than the one replay ended on.
    TimelineNotFollowed {
        /// The segment replay ended in.
        end: Segment,
        /// The archive's newest timeline.
        newest_tli: u32,
    },
}

/// Compare where replay ended (the last line of the promoted timeline's history) with the
/// archive as listed before the restore.
pub fn prove(listing: &Listing, history: &[Switch], seg_size: u64) -> Result<Outcome, String> {
    let last = history
        .last()
        .ok_or("the restored cluster has no timeline history: it was not promoted")?;
    // The switch LSN is where replay ended: the last byte replayed is just before it.
    let end = Segment::of_lsn(last.tli, last.lsn.saturating_sub(1), seg_size);
    if listing.segments.is_empty() {
        return Ok(Outcome::EmptyArchive { end });
    }
    if let Some(newest_tli) = listing.newest_tli().filter(|t| *t > last.tli) {
        return Ok(Outcome::TimelineNotFollowed { end, newest_tli });
    }
    let Some(newest) = listing.newest_on(last.tli) else {
        // Nothing of this timeline is archived: the backup's own WAL is all there is to replay.
        return Ok(Outcome::Complete { end });
    };
    if end >= newest {
        return Ok(Outcome::Complete { end });
    }
    let next = Segment {
        tli: last.tli,
        number: end.number.saturating_add(1),
    };
    Ok(if listing.segments.contains_key(&next) {
        Outcome::Unreadable {
            end,
            segment: next,
            newest,
        }
    } else {
        Outcome::Gap {
            end,
            missing: next,
            newest,
        }
    })
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

    fn ended_at(lsn: &str) -> Vec<Switch> {
        parse_history(&format!("1\t{lsn}\tno recovery target specified\n"))
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

    #[test]
    fn replay_to_the_newest_segment_is_complete() {
        let l = listing(&[
            "000000010000000000000002-a.gz",
            "000000010000000000000003-b.gz",
        ]);
        // Replay ended at the start of segment 4 (after a WAL switch at the end of 3).
        let out = prove(&l, &ended_at("0/4000000"), MB16).unwrap();
        assert!(matches!(out, Outcome::Complete { .. }), "{out:?}");
        // ... or inside segment 3.
        let out = prove(&l, &ended_at("0/3000100"), MB16).unwrap();
        assert!(matches!(out, Outcome::Complete { .. }), "{out:?}");
    }

    #[test]
    fn a_missing_segment_after_the_backup_is_a_gap_named_by_its_segment() {
        let l = listing(&[
            "000000010000000000000002-a.gz",
            "000000010000000000000004-c.gz",
        ]);
        match prove(&l, &ended_at("0/3000000"), MB16).unwrap() {
            Outcome::Gap {
                missing, newest, ..
            } => {
                assert_eq!(missing.name(MB16), "000000010000000000000003");
                assert_eq!(newest.name(MB16), "000000010000000000000004");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_archived_segment_replay_could_not_use_is_unreadable() {
        let l = listing(&[
            "000000010000000000000002-a.gz",
            "000000010000000000000003-b.gz",
            "000000010000000000000004-c.gz",
        ]);
        match prove(&l, &ended_at("0/3000000"), MB16).unwrap() {
            Outcome::Unreadable { segment, .. } => {
                assert_eq!(segment.name(MB16), "000000010000000000000003")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_archive_is_never_a_pass() {
        let out = prove(&Listing::default(), &ended_at("0/4000000"), MB16).unwrap();
        assert!(matches!(out, Outcome::EmptyArchive { .. }), "{out:?}");
    }

    #[test]
    fn a_newer_timeline_in_the_archive_must_be_followed() {
        let mut l = listing(&["000000010000000000000003-b.gz"]);
        l.histories.push(2);
        let out = prove(&l, &ended_at("0/4000000"), MB16).unwrap();
        assert!(
            matches!(out, Outcome::TimelineNotFollowed { newest_tli: 2, .. }),
            "{out:?}"
        );
        // A failover followed: the history ends on timeline 2, past its newest segment.
        let mut l = listing(&["000000010000000000000003-b.gz"]);
        l.segments.insert(Segment { tli: 2, number: 5 }, 0);
        let h = parse_history(
            "1\t0/3800000\tno recovery target specified\n\
             2\t0/6000000\tno recovery target specified\n",
        );
        assert!(matches!(
            prove(&l, &h, MB16).unwrap(),
            Outcome::Complete { .. }
        ));
    }
}
