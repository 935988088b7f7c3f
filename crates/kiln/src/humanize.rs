//! Human-readable sizes, ages and aligned columns, matching what the docker CLI prints.

/// docker's `units.HumanSizeWithPrecision(size, 3)`: decimal units, three significant digits.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{}{}", three_significant(value), UNITS[unit])
}

/// Go's `%.3g` for values in [0, 1000): no exponent, trailing zeros dropped.
fn three_significant(v: f64) -> String {
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// docker's `units.HumanDuration`, for "CREATED" columns ("2 days ago").
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let minutes = s / 60;
    let hours = minutes / 60;
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// Columns aligned as docker's tabwriter does (minimum width 10, padding 3).
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(10)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(999), "999B");
        assert_eq!(size(1234), "1.23kB");
        assert_eq!(size(4_261_234), "4.26MB");
        assert_eq!(size(12_000_000), "12MB");
        assert_eq!(size(1_500_000_000), "1.5GB");
    }

    #[test]
    fn durations_like_docker() {
        assert_eq!(duration(0), "Less than a second");
        assert_eq!(duration(30), "30 seconds");
        assert_eq!(duration(61), "About a minute");
        assert_eq!(duration(3600 * 3), "3 hours");
        assert_eq!(duration(3600 * 24 * 3), "3 days");
        assert_eq!(duration(3600 * 24 * 365 * 3), "3 years");
    }

    #[test]
    fn aligns_columns() {
        let t = table(&[
            vec!["REPOSITORY".into(), "TAG".into(), "SIZE".into()],
            vec!["busybox".into(), "latest".into(), "1MB".into()],
        ]);
        assert_eq!(
            t,
            "REPOSITORY   TAG       SIZE\nbusybox      latest    1MB\n"
        );
    }
}
