//! Archive continuity from a listing, no restore: every segment from the oldest retained
//! backup's first WAL segment to the newest archived one, along the primary's timeline path.
//!
//! The path comes from the newest timeline's history file (each line: a parent timeline and the
//! LSN where it ended). A parent's segments end just before the segment holding that LSN: the
//! segment holding it is only partial on the parent (archived as `.partial`, which a listing
//! does not count) and whole on the child. Missing segments are classified as wal-g's
//! `wal-verify` does: `lost` when a later segment of the path was stored more than the grace
//! period ago (it will not come any more), `delayed` when only recently stored segments follow
//! it (an asynchronous, parallel archive-push may still be filling it in), and `uploading` for the
//! segments the primary has completed after the newest archived one.

use pgbackrest::wal::{Listing, Segment, Switch};

/// One class of missing segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Missing with older-than-grace segments after it.
    Lost,
    /// Missing with only recently stored segments after it.
    Delayed,
    /// Completed on the primary after the newest archived segment, not in the repository yet.
    Uploading,
}

impl Class {
    /// Every class, in order.
    pub const ALL: [Class; 3] = [Class::Lost, Class::Delayed, Class::Uploading];

    /// Its `class` label value.
    pub fn name(self) -> &'static str {
        match self {
            Class::Lost => "lost",
            Class::Delayed => "delayed",
            Class::Uploading => "uploading",
        }
    }
}

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The first segment checked (the oldest retained backup's WAL start).
    pub from: Option<String>,
    /// The last segment checked (the newest archived one on the path).
    pub to: Option<String>,
    /// Segments the range holds.
    pub expected: u64,
    /// Missing segments per class, with the first of each class (a segment name, or
    /// `NNNNNNNN.history` for a timeline history file the path needs).
    pub missing: Vec<(Class, u64, String)>,
}

impl Report {
    /// The count of `class`.
    pub fn count(&self, class: Class) -> u64 {
        self.missing
            .iter()
            .filter(|(c, ..)| *c == class)
            .map(|(_, n, _)| *n)
            .sum()
    }
}

/// The inputs of [`check`].
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The archive of the current database entry.
    pub listing: &'a Listing,
    /// The path's timeline (the primary's current one) and its history file's lines (empty for
    /// timeline 1; `None` when the path needs one and the archive has none).
    pub tli: u32,
    /// See `tli`.
    pub history: Option<&'a [Switch]>,
    /// The oldest retained backup's first segment.
    pub start: Segment,
    /// The primary's current segment (the one being written), when known.
    pub current: Option<Segment>,
    /// The segment size, bytes.
    pub seg_size: u64,
    /// Now and the grace period, seconds.
    pub now: i64,
    /// See `now`.
    pub grace: i64,
}

/// Check the path; see the module documentation.
pub fn check(i: &Inputs<'_>) -> Report {
    let mut report = Report {
        from: Some(i.start.name(i.seg_size)),
        ..Report::default()
    };
    let Some(history) = i.history else {
        report
            .missing
            .push((Class::Lost, 1, format!("{:08X}.history", i.tli)));
        return report;
    };
    // (timeline, first segment number, last segment number or None for the open end).
    let mut ranges: Vec<(u32, u64, Option<u64>)> = Vec::new();
    let mut lo = 0u64;
    for sw in history.iter().filter(|s| s.tli < i.tli) {
        let switch_seg = Segment::of_lsn(sw.tli, sw.lsn, i.seg_size).number;
        if switch_seg > lo {
            ranges.push((sw.tli, lo, Some(switch_seg - 1)));
        }
        lo = lo.max(switch_seg);
    }
    ranges.push((i.tli, lo, None));
    let on_path = |s: &Segment| {
        ranges
            .iter()
            .any(|&(t, a, b)| s.tli == t && s.number >= a && b.is_none_or(|b| s.number <= b))
    };
    let path: Vec<(&Segment, i64)> = i
        .listing
        .segments
        .iter()
        .filter(|(s, _)| on_path(s) && s.number >= i.start.number)
        .map(|(s, t)| (s, *t))
        .collect();
    let Some(newest) = path.last().map(|(s, _)| **s) else {
        // Nothing archived from the backup on: the backup's own first segment is missing.
        report.expected = 1;
        report
            .missing
            .push((Class::Lost, 1, i.start.name(i.seg_size)));
        return report;
    };
    report.to = Some(newest.name(i.seg_size));
    // Everything before the newest segment stored before the grace period is lost if missing.
    let settled = path
        .iter()
        .filter(|(_, t)| *t <= i.now - i.grace)
        .map(|(s, _)| s.number)
        .max();
    let mut first: [Option<Segment>; 2] = [None, None];
    let mut counts = [0u64; 2];
    for &(tli, a, b) in &ranges {
        let a = a.max(i.start.number);
        let b = b.unwrap_or(newest.number).min(newest.number);
        if a > b {
            continue;
        }
        report.expected += b - a + 1;
        // Walk the present segments of the range: each hole between them is missing.
        let mut next = a;
        let present = i
            .listing
            .segments
            .range(Segment { tli, number: a }..=Segment { tli, number: b })
            .map(|(s, _)| s.number)
            .chain(std::iter::once(b + 1));
        for n in present {
            if n > next {
                // Segments next..n are missing; split them at the settled point.
                let lost_end = settled.map_or(next, |s| s.clamp(next, n));
                for (k, (lo, hi)) in [(next, lost_end), (lost_end, n)].into_iter().enumerate() {
                    if hi > lo {
                        counts[k] += hi - lo;
                        first[k].get_or_insert(Segment { tli, number: lo });
                    }
                }
            }
            next = n + 1;
        }
    }
    for (k, class) in [Class::Lost, Class::Delayed].into_iter().enumerate() {
        if let Some(seg) = first[k] {
            report
                .missing
                .push((class, counts[k], seg.name(i.seg_size)));
        }
    }
    // The primary's completed segments after the newest archived one.
    if let Some(cur) = i.current.filter(|c| c.number > newest.number + 1) {
        let seg = Segment {
            tli: cur.tli,
            number: newest.number + 1,
        };
        let first_up = if on_path(&seg) {
            seg
        } else {
            Segment { tli: i.tli, ..seg }
        };
        report.missing.push((
            Class::Uploading,
            cur.number - newest.number - 1,
            first_up.name(i.seg_size),
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgbackrest::wal::parse_history;

    const MB16: u64 = 16 * 1024 * 1024;

    fn seg(tli: u32, number: u64) -> Segment {
        Segment { tli, number }
    }

    fn listing(segments: &[(u32, u64, i64)]) -> Listing {
        let mut l = Listing::default();
        for &(t, n, time) in segments {
            l.segments.insert(seg(t, n), time);
        }
        l
    }

    fn run(
        l: &Listing,
        tli: u32,
        history: &[Switch],
        start: Segment,
        cur: Option<Segment>,
    ) -> Report {
        check(&Inputs {
            listing: l,
            tli,
            history: Some(history),
            start,
            current: cur,
            seg_size: MB16,
            now: 10_000,
            grace: 600,
        })
    }

    #[test]
    fn a_complete_archive_has_no_missing_segment() {
        let l = listing(&[(1, 2, 100), (1, 3, 100), (1, 4, 9_990)]);
        let r = run(&l, 1, &[], seg(1, 2), Some(seg(1, 5)));
        assert_eq!(r.expected, 3);
        assert!(r.missing.is_empty(), "{r:?}");
        assert_eq!(r.to.as_deref(), Some("000000010000000000000004"));
        // Segments before the oldest backup's start do not count.
        let r = run(&l, 1, &[], seg(1, 3), None);
        assert_eq!((r.expected, r.missing.len()), (2, 0));
    }

    #[test]
    fn a_hole_before_old_segments_is_lost_and_before_fresh_ones_delayed() {
        // 3 and 4 missing; 5 stored long ago, 7 just now after a missing 6.
        let l = listing(&[(1, 2, 100), (1, 5, 100), (1, 7, 9_990)]);
        let r = run(&l, 1, &[], seg(1, 2), Some(seg(1, 10)));
        assert_eq!(r.count(Class::Lost), 2);
        assert_eq!(r.count(Class::Delayed), 1);
        assert_eq!(
            r.count(Class::Uploading),
            2,
            "8 and 9 are complete on the primary"
        );
        let first: Vec<(&str, &str)> = r
            .missing
            .iter()
            .map(|(c, _, s)| (c.name(), s.as_str()))
            .collect();
        assert_eq!(
            first,
            [
                ("lost", "000000010000000000000003"),
                ("delayed", "000000010000000000000006"),
                ("uploading", "000000010000000000000008")
            ]
        );
    }

    #[test]
    fn timelines_follow_the_history_and_partial_parents_are_not_expected() {
        // Timeline 1 ended inside segment 4 (its partial 4 is not listed): 2, 3 on timeline 1,
        // then 4, 5 on timeline 2. A stray segment of an abandoned timeline 1 branch is ignored.
        let h = parse_history("1\t0/4000100\tno recovery target specified\n");
        let l = listing(&[(1, 2, 1), (1, 3, 1), (1, 6, 1), (2, 4, 1), (2, 5, 1)]);
        let r = run(&l, 2, &h, seg(1, 2), None);
        assert_eq!(r.expected, 4);
        assert!(r.missing.is_empty(), "{r:?}");
        // Timeline 2's first segment missing is a gap named on timeline 2.
        let l = listing(&[(1, 2, 1), (1, 3, 1), (2, 5, 1)]);
        let r = run(&l, 2, &h, seg(1, 2), None);
        assert_eq!(
            r.missing,
            [(Class::Lost, 1, "000000020000000000000004".into())]
        );
        // A switch exactly at a segment boundary: timeline 1 keeps 3, timeline 2 starts at 4.
        let h = parse_history("1\t0/4000000\tno recovery target specified\n");
        let l = listing(&[(1, 3, 1), (2, 4, 1)]);
        assert!(run(&l, 2, &h, seg(1, 3), None).missing.is_empty());
    }

    #[test]
    fn a_missing_history_file_or_an_empty_archive_is_a_gap() {
        let l = listing(&[(2, 5, 1)]);
        let r = check(&Inputs {
            listing: &l,
            tli: 2,
            history: None,
            start: seg(1, 2),
            current: None,
            seg_size: MB16,
            now: 0,
            grace: 0,
        });
        assert_eq!(r.missing, [(Class::Lost, 1, "00000002.history".into())]);
        let r = run(&Listing::default(), 1, &[], seg(1, 2), None);
        assert_eq!(
            r.missing,
            [(Class::Lost, 1, "000000010000000000000002".into())]
        );
    }

    #[test]
    fn other_segment_sizes_name_segments_by_their_own_numbering() {
        // 1 MiB segments: 4096 per 4 GiB "log"; 0x1000 is the first of log 1.
        let mb1 = 1024 * 1024;
        let mut l = Listing::default();
        l.segments.insert(seg(1, 0xFFF), 1);
        l.segments.insert(seg(1, 0x1001), 1);
        let r = check(&Inputs {
            listing: &l,
            tli: 1,
            history: Some(&[]),
            start: seg(1, 0xFFF),
            current: None,
            seg_size: mb1,
            now: 10_000,
            grace: 600,
        });
        assert_eq!(
            r.missing,
            [(Class::Lost, 1, "000000010000000100000000".into())]
        );
    }
}
