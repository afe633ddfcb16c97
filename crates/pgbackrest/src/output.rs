//! Readers of what pgBackRest prints: `restore`'s chosen backup set and `verify`'s report
//! (`verify` exits 0 even when it finds errors, so its report is read line by line).

/// The errors `verify` reported (empty: the repository verified clean).
pub fn verify_errors(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            (l.contains("status: error") || l.contains(" error:") || l.contains("invalid"))
                && !l.contains("invalid: 0")
        })
        .map(|l| l.trim().to_owned())
        .collect()
}

/// The files a backup's `backup.manifest` records page checksum errors for (its
/// `[target:file]` lines with `"checksum-page":false`), as `pg_data/base/5/16387 (pages [1])`.
pub fn page_errors(manifest: &str) -> Vec<String> {
    manifest
        .lines()
        .filter(|l| l.contains("\"checksum-page\":false"))
        .filter_map(|l| {
            let (file, meta) = l.split_once('=')?;
            let pages = meta
                .split_once("\"checksum-page-error\":")
                .and_then(|(_, rest)| {
                    // The list, nested ranges included: up to its matching `]`.
                    let mut depth = 0usize;
                    let end = rest.char_indices().find(|&(_, c)| {
                        depth = match c {
                            '[' => depth + 1,
                            ']' => depth.saturating_sub(1),
                            _ => depth,
                        };
                        c == ']' && depth == 0
                    })?;
                    rest.get(..=end.0)
                })
                .unwrap_or("?");
            Some(format!("{file} (pages {pages})"))
        })
        .collect()
}

/// The backup set named by `restore` at info level (`restore backup set LABEL, ...`).
pub fn restored_set(output: &str) -> Option<String> {
    let at = output.find("restore backup set ")? + "restore backup set ".len();
    output[at..]
        .split(|c: char| c.is_whitespace() || c == ',')
        .next()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_output_names_the_set() {
        let out =
            "P00   INFO: repo1: restore backup set 20250520-101010F, recovery will start at x";
        assert_eq!(restored_set(out).as_deref(), Some("20250520-101010F"));
    }

    #[test]
    fn page_errors_name_the_file_and_its_pages() {
        let manifest = "[target:file]\npg_data/base/5/1={\"checksum\":\"a\",\"size\":1}\n\
            pg_data/base/5/16387={\"checksum\":\"e\",\"checksum-page\":false,\
            \"checksum-page-error\":[1,[4,6]],\"size\":237568}\n";
        assert_eq!(
            page_errors(manifest),
            ["pg_data/base/5/16387 (pages [1,[4,6]])"]
        );
    }

    #[test]
    fn verify_errors_are_found_in_its_report() {
        assert!(verify_errors("P00 INFO: stanza: main\n    status: ok\n").is_empty());
        assert_eq!(verify_errors("  status: error\n").len(), 1);
    }
}
