//! Tables and durations for humans.

/// Longest a table cell is shown, in characters; a longer one is cut
/// with "…" (`--json` has it whole). A table with a 4 KiB key list or a
/// long forced-outcome reason in one column stays readable.
pub const MAX_CELL_CHARS: usize = 120;

/// Left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cut = |cell: &str| -> String {
        if cell.chars().count() <= MAX_CELL_CHARS {
            return cell.to_string();
        }
        cell.chars().take(MAX_CELL_CHARS - 1).chain(std::iter::once('…')).collect()
    };
    let header: Vec<String> = header.iter().map(|h| cut(h)).collect();
    let rows: Vec<Vec<String>> = rows.iter().map(|row| row.iter().map(|c| cut(c)).collect()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', widths[i].saturating_sub(cell.chars().count())));
        }
        line.trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

/// "12.3s", "4m05s", "2h10m", "3d4h".
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{:.1}s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Node ids in the order people count them: p2 before p10 (trial 22B: a
/// 64-participant transaction listed p1, p10, p11, …, p2).
pub fn by_node_id(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |id: &str| {
        let digits = id.len() - id.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (name, number) = id.split_at(id.len() - digits);
        (name.to_string(), number.parse::<u128>().unwrap_or(0), id.to_string())
    };
    split(a).cmp(&split(b))
}

pub fn key(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(1_234), "1.2s");
        assert_eq!(age(125_000), "2m05s");
        assert_eq!(age(7_800_000), "2h10m");
        assert_eq!(age(100_000_000), "1d3h");
    }

    #[test]
    fn node_ids_sort_as_counted() {
        let mut ids = vec!["p10", "p2", "c1", "p1", "p", "p02", "q1"];
        ids.sort_by(|a, b| by_node_id(a, b));
        assert_eq!(ids, vec!["c1", "p", "p1", "p02", "p2", "p10", "q1"]);
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }

    /// A cell wider than 65,535 characters once panicked the formatter.
    #[test]
    fn long_cells_are_cut() {
        let t = table(&["A", "B"], &[vec!["x".repeat(100_000), "é".into()]]);
        let cell = format!("{}…", "x".repeat(MAX_CELL_CHARS - 1));
        assert_eq!(t, format!("A{}  B\n{cell}  é\n", " ".repeat(MAX_CELL_CHARS - 1)));
    }
}
