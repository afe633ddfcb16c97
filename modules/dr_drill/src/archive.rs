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

use pgbackrest::wal::{Listing, Segment, Switch};

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
    use pgbackrest::wal::parse_history;
    use serde_json::Value;

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
