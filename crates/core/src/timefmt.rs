//! Small, dependency-free text for CLI output: UTC time formatting and parsing (`--since`),
//! and [`printable`], which makes text from outside safe to show on a terminal.

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-21T07:09:00.123Z`
pub fn iso_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Parse a `--since` value into epoch milliseconds: a duration back from now
/// (`90s`, `15m`, `2h`, `7d`), a date `YYYY-MM-DD` (UTC midnight) or a time
/// `YYYY-MM-DDTHH:MM[:SS][Z]` (UTC).
pub fn parse_since(s: &str, now_ms: i64) -> Option<i64> {
    let s = s.trim();
    if let Some(unit) = s
        .chars()
        .last()
        .filter(|c| c.is_ascii_alphabetic() && s.len() > 1)
    {
        let num = &s[..s.len() - 1];
        if num.chars().all(|c| c.is_ascii_digit()) {
            let n: i64 = num.parse().ok()?;
            let mul = match unit {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                'd' => 86_400_000,
                _ => return None,
            };
            return Some(now_ms - n.checked_mul(mul)?);
        }
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if let Some(t) = time {
        let parts: Vec<&str> = t.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return None;
        }
        let h: i64 = parts[0].parse().ok()?;
        let mi: i64 = parts[1].parse().ok()?;
        let se: i64 = match parts.get(2) {
            Some(x) => x.parse().ok()?,
            None => 0,
        };
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + se;
    }
    Some(secs * 1000)
}

/// `s` safe to show on a terminal as one line: control characters (C0 with newlines and
/// ESC, DEL, C1 such as U+009B CSI) and the bidirectional formatting characters (U+202E
/// and kin, which reorder what follows) are written as `\uXXXX`. For every line that
/// carries text from outside: user names, reasons, file names, messages, key ids.
pub fn printable(s: &str) -> String {
    let hostile = |c: char| {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if hostile(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso_utc(1_795_244_940_123), "2026-11-21T07:09:00.123Z");
    }

    #[test]
    fn parses_since_forms() {
        let now = 1_795_244_940_000;
        assert_eq!(parse_since("15m", now), Some(now - 900_000));
        assert_eq!(parse_since("2d", now), Some(now - 172_800_000));
        assert_eq!(parse_since("2026-11-21", now), Some(1_795_219_200_000));
        assert_eq!(
            parse_since("2026-11-21T07:09:00Z", now),
            Some(1_795_244_940_000)
        );
        assert_eq!(
            parse_since("2026-11-21T07:09", now),
            Some(1_795_244_940_000)
        );
        assert_eq!(parse_since("yesterday", now), None);
        assert_eq!(parse_since("2026-13-01", now), None);
        assert_eq!(parse_since("5y", now), None);
    }
}
